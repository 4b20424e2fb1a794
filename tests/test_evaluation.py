"""The evaluation harness on two-document slices of every format, on a tiny random model.

Answers of a random model score nothing; what is checked is what a user of
the harness relies on: every mode answers every question over the same
chunks, embedder and k, metrics and recall come out of the real metric
functions, memories are reused between runs, and the CLI prints the table and
writes the JSON it promises.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.datasets import load_needle
from agent.evaluation import MODES, RATES, EvalConfig, Harness, Outcome, load_samples, rates, truncate_middle
from agent.metrics import answer_in, gold_chunk_ids, recall_at_k, token_f1
from agent.retrieval import chunk_document, get_embedder
from store.memories import MemoryStore
from store.vectors import EmbeddedIndex
from tests.conftest import SHARED_DATA

CONFIG = EvalConfig(k=3, beta=8, answer_tokens=4, questions=1)


def _slice(tmp_path: Path, fmt: str) -> Path:
    """The first two documents of the shared file (one question each), as a file of that format."""
    if fmt == "qmsum":
        lines = (SHARED_DATA / "qmsum" / "val.jsonl").read_text().splitlines()[:2]
        meetings = [json.loads(line) for line in lines]
        for m in meetings:  # the query whose evidence ends first, and the transcript up to a little past it
            query = min(m["specific_query_list"], key=lambda q: max(int(e) for _, e in q["relevant_text_span"]))
            end = max(int(e) for _, e in query["relevant_text_span"])
            m["meeting_transcripts"] = m["meeting_transcripts"][: end + 20]
            m["specific_query_list"] = [query]
        path = tmp_path / "qmsum.jsonl"
        path.write_text("\n".join(json.dumps(m) for m in meetings))
    elif fmt == "leval":
        items = [json.loads(line) for line in (SHARED_DATA / "leval" / "natural_question.jsonl").open()][:2]
        for item in items:
            item["input"] = item["input"][:6000]
        path = tmp_path / "leval.jsonl"
        path.write_text("\n".join(json.dumps(i) for i in items))
    elif fmt == "longbench":
        items = json.loads((SHARED_DATA / "longbench" / "2wikimqa.json").read_text())
        path = tmp_path / "longbench.json"
        path.write_text(json.dumps(dict(list(items.items())[:2])))
    else:
        path = tmp_path / "essays"
        path.mkdir()
        for f in sorted((SHARED_DATA / "needle" / "essays").glob("*.txt"))[:2]:
            (path / f.name).write_text(f.read_text())
    return path


@pytest.fixture
def harness(tiny_long_lm, redis_client):
    index = EmbeddedIndex(redis_client, prefix="test-eval")
    return Harness(tiny_long_lm, get_embedder(), index, MemoryStore(redis_client, prefix="test-eval"), CONFIG)


@pytest.mark.parametrize("fmt", ["qmsum", "leval", "longbench", "needle"])
def test_every_mode_answers_every_question_of_a_two_document_slice(harness, tmp_path, fmt):
    samples = load_samples(fmt, _slice(tmp_path, fmt), limit=2)
    assert len(samples) == 2
    events = []
    report = harness.evaluate(fmt, samples, lambda what, done, total: events.append((done, total)))

    questions = sum(min(1, len(s.questions)) for s in samples)
    assert len(report.outcomes) == questions * len(MODES)
    assert events[-1] == (questions * len(MODES), questions * len(MODES))  # progress reaches the end
    table = report.to_json()
    assert table["n"] == questions and set(table["modes"]) == set(MODES)
    for row in table["modes"].values():
        assert {"f1", "em", "rougeL", "recall@3", "hit@3", "answer_in_evidence", "latency_s"} <= set(row)
    for outcome in report.outcomes:
        assert outcome.f1 == max(token_f1(outcome.prediction, a) for a in outcome.answers)
        retrieves = outcome.mode in ("rag", "memorag")
        assert len(outcome.retrieved) == (CONFIG.k if retrieves else 0)
        assert ("retrieval" in outcome.stages) == retrieves
    if fmt in ("qmsum", "needle"):  # gold evidence spans: recall is computed for the retrieving modes only
        assert table["modes"]["rag"]["recall@3"] is not None
        assert table["modes"]["qa"]["recall@3"] is None


def test_modes_share_chunks_embedder_and_k(harness, tmp_path):
    sample = next(iter(load_needle(_slice(tmp_path, "needle"), limit=1, words=1500, facts=2)))
    encoded: list[list[str]] = []
    real_encode = harness.embedder.encode
    harness.embedder.encode = lambda texts: encoded.append(list(texts)) or real_encode(texts)
    try:
        report = harness.evaluate("needle", [sample])
    finally:
        harness.embedder.encode = real_encode

    tokenizer, size, overlap = harness.lm.tokenizer, CONFIG.chunk_tokens, CONFIG.overlap
    chunks = chunk_document(sample.doc_id, sample.text, tokenizer, size, overlap, name=sample.doc_id)
    assert encoded[0] == [c.searchable for c in chunks]  # the document is embedded once, for every mode
    assert all(c.context == sample.doc_id for c in chunks)  # no headings: titled by its name
    assert sum(batch == encoded[0] for batch in encoded) == 1
    ids = {c.id for c in chunks}
    rag, memorag = (next(o for o in report.outcomes if o.mode == m) for m in ("rag", "memorag"))
    assert set(rag.retrieved) <= ids and set(memorag.retrieved) <= ids
    assert len(rag.retrieved) == len(memorag.retrieved) == CONFIG.k
    gold = gold_chunk_ids(chunks, sample.questions[0].evidence)
    assert rag.recall == recall_at_k(gold, rag.retrieved, CONFIG.k)
    by_id = {c.id: c.text for c in chunks}
    for outcome in (rag, memorag):  # the answer is looked for in exactly what the generator was given
        assert outcome.answer_found == answer_in("\n".join(by_id[i] for i in outcome.retrieved), outcome.answers)
    assert next(o for o in report.outcomes if o.mode == "qa").answer_found is None


def test_memories_are_built_once_and_reused(harness, tmp_path):
    samples = load_samples("needle", _slice(tmp_path, "needle"), limit=1)
    memory_only = Harness(harness.lm, harness.embedder, harness.index, harness.store, EvalConfig(modes=("qa",), k=3))
    first = memory_only.evaluate("needle", samples)
    second = memory_only.evaluate("needle", samples)
    assert (first.memory["built"], first.memory["cached"]) == (1, 0)
    assert (second.memory["built"], second.memory["cached"]) == (0, 1)
    rag_only = Harness(harness.lm, harness.embedder, harness.index, harness.store, EvalConfig(modes=("rag",), k=3))
    assert rag_only.evaluate("needle", samples).memory == {"built": 0, "cached": 0, "build_s": 0.0}


def test_truncate_middle_keeps_both_ends(tiny_lm):
    text = " ".join(f"w{i}" for i in range(400))
    cut = truncate_middle(tiny_lm.tokenizer, text, 100)
    assert cut.startswith("w0 w1") and cut.endswith("w398 w399")
    assert len(tiny_lm.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 102
    assert truncate_middle(tiny_lm.tokenizer, "short text", 100) == "short text"


def test_config_and_files_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown mode"):
        EvalConfig(modes=("rag", "bogus"))
    with pytest.raises(ValueError, match="unknown fusion"):
        EvalConfig(fusion="bogus")
    with pytest.raises(ValueError, match="evidence order"):
        EvalConfig(evidence_order="bogus")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not": "qmsum"}\n')
    with pytest.raises(ValueError, match="is not a qmsum file"):
        load_samples("qmsum", bad)
    with pytest.raises(ValueError, match="no essays"):
        load_samples("needle", tmp_path)


def test_eval_command_prints_the_table_and_writes_json(tmp_path, tiny_long_model_dir, valkey_url, monkeypatch):
    import manage

    monkeypatch.setenv("MEMORAG_MODEL", str(tiny_long_model_dir))
    monkeypatch.setenv("MEMORAG_REDIS_URL", valkey_url)
    monkeypatch.setenv("MEMORAG_HOME", str(tmp_path / "home"))
    data, out = _slice(tmp_path, "longbench"), tmp_path / "out" / "eval.json"
    args = [
        "eval",
        str(data),
        "--format",
        "longbench",
        "--limit",
        "2",
        "--beta",
        "8",
        "--k",
        "3",
        "--answer-tokens",
        "4",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(manage.cli, args)
    assert result.exit_code == 0, result.output
    for mode in MODES:
        assert mode in result.output
    assert re.search(r": memorag \d+/\d+\n", result.output)  # progress lines when output is not a terminal
    payload = json.loads(out.read_text())
    assert payload["dataset"] == "longbench" and payload["n"] == 2
    assert set(payload["modes"]["memorag"]) >= {"f1", "em", "rougeL", "recall@3", "hit@3", "latency_s"}
    again = CliRunner().invoke(manage.cli, [*args[:-2], "--modes", "qa"])
    assert again.exit_code == 0 and "0 built" in again.output and "2 from cache" in again.output

    wrong = CliRunner().invoke(manage.cli, ["eval", str(data), "--format", "qmsum"])
    assert wrong.exit_code == 2 and "is not a qmsum file" in wrong.output
    unknown = CliRunner().invoke(manage.cli, [*args[:-2], "--modes", "rag,nope"])
    assert unknown.exit_code == 2 and "unknown mode" in unknown.output
    quoted = CliRunner().invoke(manage.cli, [*args, "--modes", "memorag", "--fusion", "anchored_spans2_share1"])
    assert quoted.exit_code == 0 and json.loads(out.read_text())["config"]["fusion"] == "anchored_spans2_share1"
    ordered = CliRunner().invoke(manage.cli, [*args, "--modes", "rag", "--evidence-order", "best-last"])
    assert ordered.exit_code == 0 and json.loads(out.read_text())["config"]["evidence_order"] == "best-last"


def test_the_cli_offers_exactly_the_library_evidence_orders():
    from agent.retrieval import EVIDENCE_ORDERS as LIBRARY_ORDERS
    from manage import EVIDENCE_ORDERS

    assert EVIDENCE_ORDERS == LIBRARY_ORDERS


def test_readers_answer_from_the_same_evidence_and_unanswerable_questions_swap_documents(harness, tmp_path):
    samples = load_samples("leval", _slice(tmp_path, "leval"), limit=2)
    config = EvalConfig(modes=("rag",), k=3, answer_tokens=4, questions=2, readers=("none", "auto", "extract"))
    report = Harness(harness.lm, harness.embedder, harness.index, harness.store, config).evaluate("leval", samples)
    table = report.to_json()["modes"]
    assert list(table) == ["rag", "rag/auto", "rag/extract"]
    by_question: dict[tuple[str, str], list] = {}
    for outcome in report.outcomes:
        by_question.setdefault((outcome.doc_id, outcome.question), []).append(outcome)
    for rows in by_question.values():
        assert len({tuple(o.retrieved) for o in rows}) == 1  # every reader reads the same evidence
        plain, *read = rows
        assert plain.supported is None and plain.reader == "none"
        for o in read:
            assert o.supported in (0.0, 1.0) and o.unsupported_shown == 0.0  # nothing unsupported is shown
            assert o.prediction or not o.supported  # a declined answer shows nothing
    assert {"supported", "citation_hit", "top_answer_found", "unsupported_shown", "answer_recall"} <= set(
        table["rag/auto"]
    )
    swapped = EvalConfig(modes=("rag",), k=3, questions=1, readers=("extract",), unanswerable=True)
    report = Harness(harness.lm, harness.embedder, harness.index, harness.store, swapped).evaluate("leval", samples)
    assert [(o.doc_id, o.question) for o in report.outcomes] == [  # each document's questions, of the next one
        (samples[1].doc_id, samples[0].questions[0].text),
        (samples[0].doc_id, samples[1].questions[0].text),
    ]


def _row(answerable: bool, shown: bool, right: float | None, cited: float | None) -> Outcome:
    return Outcome(
        "rag/auto", "d", "q", "x" if shown else "", ["a"] if answerable else [], 0.0, 0.0, 0.0, None, None, None,
        0.0, answerable=answerable, shown=shown, right=right, cited=cited,
    )  # fmt: skip


def test_answer_rates_are_counted_under_the_fields_names():
    rows = [
        _row(True, True, 1.0, 1.0),  # right, cited
        _row(True, True, 1.0, 0.0),  # right, but the cited sentence lacks it
        _row(True, True, 0.0, 0.0),  # wrong and shown
        _row(True, False, 0.0, 0.0),  # declined though answerable
        _row(False, False, None, None),  # off-topic, declined
        _row(False, True, None, None),  # off-topic, answered: wrong shown
    ]
    got = rates(rows)
    assert got["right"] == 0.5 and got["citation_recall"] == 0.25 and got["citation_precision"] == 1 / 3
    assert got["answerable_declined"] == 0.25 and got["offtopic_declined"] == 0.5
    assert got["wrong_shown"] == 2 / 6 and got["routed"] is None


def test_a_knowledge_base_set_is_asked_of_all_its_documents_at_once(harness, tmp_path):
    from tests.test_datasets import _kb_set

    samples = load_samples("kbqa", _kb_set(tmp_path))
    config = EvalConfig(modes=("rag",), k=2, answer_tokens=4, readers=("auto",))
    report = Harness(harness.lm, harness.embedder, harness.index, harness.store, config).evaluate_kb("kb", samples)
    by_question = {o.question: o for o in report.outcomes}
    assert len(report.outcomes) == 5 and all(o.mode == "rag/auto" for o in report.outcomes)
    alpha = by_question["Which port does alpha use?"]
    assert alpha.answerable and alpha.routed == 1.0 and set(alpha.retrieved) <= {"a#0", "b#0"}
    offtopic = by_question["What is the capital of Australia?"]
    assert not offtopic.answerable and offtopic.right is None and offtopic.routed is None
    row = report.modes()["rag/auto"]
    assert set(RATES) <= set(row) and row["offtopic_declined"] is not None
    tested = Harness(harness.lm, harness.embedder, harness.index, harness.store, config)
    only_test = tested.evaluate_kb("kb", samples, split="test")
    assert [o.question for o in only_test.outcomes] == ["What is alpha's port number?", "Who won the 1998 World Cup?"]


def test_eval_leaves_no_server_behind(tmp_path, tiny_long_model_dir):
    """With no Redis configured, eval starts the embedded Valkey for its memories and stops it when done."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MEMORAG_REDIS_URL"}
    env |= {"MEMORAG_MODEL": str(tiny_long_model_dir), "MEMORAG_HOME": str(tmp_path / "home")}
    data = _slice(tmp_path, "longbench")
    args = ["eval", str(data), "--format", "longbench", "--limit", "1", "--modes", "rag", "--answer-tokens", "4"]
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "stopped the embedded Valkey this command started" in done.stderr
    pid_file = tmp_path / "home" / "valkey" / "valkey.pid"
    if pid_file.exists():
        import psutil

        assert not psutil.pid_exists(int(pid_file.read_text()))
