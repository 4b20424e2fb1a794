"""Dataset loaders: QMSum evidence spans, L-Eval documents, LongBench prompts (any path in the format)."""

from __future__ import annotations

import json

import pytest

from agent.datasets import load_qmsum
from tests.conftest import SHARED_DATA


def test_turn_spans_become_character_spans(tmp_path):
    meeting = {
        "meeting_transcripts": [
            {"speaker": "A", "content": "Hello all ."},
            {"speaker": "B", "content": "The budget is tight ."},
            {"speaker": "A", "content": "Agreed , twelve euros ."},
        ],
        "specific_query_list": [
            {"query": "What about the budget?", "answer": "Twelve euros.", "relevant_text_span": [["1", "2"]]}
        ],
    }
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(meeting) + "\n")
    [sample] = load_qmsum(path)
    [question] = sample.questions
    start, end = question.evidence[0]
    assert sample.text[start:end].startswith("B: The budget is tight .")
    assert sample.text[start:end].endswith("twelve euros .")
    assert question.answers == ["Twelve euros."]


def test_reads_the_real_validation_file():
    samples = list(load_qmsum(SHARED_DATA / "qmsum" / "val.jsonl", limit=2))
    assert len(samples) == 2
    assert all(q.evidence for s in samples for q in s.questions)


def test_leval_lines_become_documents_with_their_questions(tmp_path):
    from agent.datasets import load_leval

    path = tmp_path / "nq.jsonl"
    rows = [
        {"input": "Doc one text.", "instructions": ["q1?", "q2?"], "outputs": ["a1", "a2"], "source": "x"},
        {"input": "Doc two text.", "instructions": ["q3?"], "outputs": ["a3"], "source": "x"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    samples = list(load_leval(path))
    assert [s.text for s in samples] == ["Doc one text.", "Doc two text."]
    assert [(q.text, q.answers) for q in samples[0].questions] == [("q1?", ["a1"]), ("q2?", ["a2"])]
    assert len(list(load_leval(path, limit=1))) == 1


def test_longbench_prompts_split_into_context_and_question(tmp_path):
    from agent.datasets import load_longbench

    instruction = "Answer the question based on the given passages. Only give me the answer."
    prompt = (
        f"{instruction}\n\nThe following are given passages.\nPassage 1:\nAlpha is a city.\n\n"
        f"Passage 2:\nBeta is a river.\n\n{instruction}\n\nQuestion: What is Beta?\nAnswer:"
    )
    path = tmp_path / "hotpotqa.json"
    path.write_text(json.dumps({"0": {"origin_prompt": prompt, "gold": ["a river"], "prediction": "", "time": 0}}))
    (sample,) = load_longbench(path)
    assert sample.text.startswith("The following are given passages.") and sample.text.endswith("Beta is a river.")
    assert instruction not in sample.text
    assert (sample.questions[0].text, sample.questions[0].answers) == ("What is Beta?", ["a river"])


@pytest.mark.skipif(not (SHARED_DATA / "longbench").exists(), reason="../shared/data not beside the checkout")
def test_the_shared_leval_and_longbench_files_load():
    from agent.datasets import load_leval, load_longbench

    for path in sorted((SHARED_DATA / "longbench").glob("*.json")):
        samples = list(load_longbench(path))
        assert samples and all(s.text and s.questions[0].text and s.questions[0].answers for s in samples), path
    nq = list(load_leval(SHARED_DATA / "leval" / "natural_question.jsonl"))
    assert len(nq) == 21 and all(len(s.text) > 10_000 and s.questions for s in nq)


def _kb_set(tmp_path):
    import gzip

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Alpha\n\nThe alpha port is 7000.\n")
    (tmp_path / "docs" / "b.txt.gz").write_bytes(gzip.compress(b"Beta runs as the user beta.\n"))
    spec = {
        "documents": [{"id": "a", "path": "docs/a.md"}, {"id": "b", "path": "docs/b.txt.gz"}],
        "questions": [
            {"q": "Which port does alpha use?", "answers": ["7000"], "doc": "a"},
            {"q": "What is alpha's port number?", "answers": ["7000"], "doc": "a"},
            {"q": "Which user does beta run as?", "answers": ["beta"], "doc": "b"},
            {"q": "What is the capital of Australia?", "answers": [], "doc": None},
            {"q": "Who won the 1998 World Cup?", "answers": [], "doc": None},
        ],
    }
    path = tmp_path / "set.json"
    path.write_text(json.dumps(spec))
    return path


def test_a_knowledge_base_set_reads_its_documents_and_splits_each_documents_questions(tmp_path):
    from agent.datasets import load_kbqa

    path = _kb_set(tmp_path)
    a, b, offtopic = load_kbqa(path)
    assert (a.doc_id, b.doc_id) == ("a", "b") and b.text == "Beta runs as the user beta.\n"  # .gz read as text
    assert [q.split for q in a.questions] == ["dev", "test"] and [q.doc for q in a.questions] == ["a", "a"]
    assert [q.split for q in b.questions] == ["dev"]  # each document alternates on its own
    assert offtopic.text == "" and [q.split for q in offtopic.questions] == ["dev", "test"]
    assert all(q.doc is None and q.answers == [] for q in offtopic.questions)


def test_a_missing_knowledge_base_document_names_its_path(tmp_path):
    from agent.datasets import load_kbqa

    path = _kb_set(tmp_path)
    (tmp_path / "docs" / "a.md").unlink()
    with pytest.raises(FileNotFoundError, match="document not found") as err:
        list(load_kbqa(path))
    assert err.value.filename.endswith("docs/a.md")


def test_the_technical_documents_set_holds_every_gold_answer_in_its_document():
    from pathlib import Path

    from agent.datasets import load_kbqa
    from agent.metrics import answer_in

    path = Path(__file__).resolve().parents[1] / "ops" / "bench" / "data" / "techdocs.json"
    spec = json.loads(path.read_text())
    missing = [d["path"] for d in spec["documents"] if not Path(d["path"]).exists()]
    if missing:
        pytest.skip(f"installed documentation not on this machine: {missing[0]}")
    *documents, offtopic = load_kbqa(path)
    assert len(documents) >= 8 and sum(len(d.questions) for d in documents) >= 60 and len(offtopic.questions) >= 20
    *meta, _ = load_kbqa(path.with_name("techdocs-meta.json"))  # questions about the documents themselves
    assert sum(len(d.questions) for d in meta) >= 20
    for d in [*documents, *meta]:
        for q in d.questions:
            assert answer_in(d.text, q.answers), (d.doc_id, q.text)
