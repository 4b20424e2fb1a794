"""The two campaigns of ops/bench/chaos.py that generate their inputs: fuzzed ``manage.py`` commands and random
knowledge bases on both vector indexes.

``run_campaign`` feeds Hypothesis-generated arguments and files (random bytes, invalid UTF-8, empty and oversized
files, malformed and encrypted PDFs, odd names, ids out of range, SQL and shell metacharacters) to every command
that does not start or stop processes, in this process through click's runner; then checks that every row
ends in a state its knowledge base can explain.
"""

from __future__ import annotations

import io
import logging
import os
import random
import tempfile
import time
from pathlib import Path

KBS = ["fz", "fz-2"]
NASTY = ["'; DROP TABLE document;--", "$(id)", "`rm -rf /`", "a b", "..", "-", "--help", "%s%n", "\u202e", "名前", ""]


def _strategies(files_dir: Path):
    from hypothesis import strategies as st

    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)
    names = st.one_of(st.sampled_from(KBS), st.sampled_from(KBS), st.sampled_from(NASTY), text)  # half real
    numbers = st.one_of(st.integers(-5, 50), st.integers(min_value=2**31 - 2, max_value=2**70))
    ids = st.one_of(st.builds(lambda k, n: f"{k}{n}", st.sampled_from("dqDQx"), numbers), st.sampled_from(NASTY), text)
    file_name = st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=40
    ).filter(lambda n: n not in (".", ".."))
    contents = st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=512).map(lambda b: b"\xff\xfe\xc3" + b),  # not UTF-8
        st.just(b""),
        st.just(b"x" * 600_000),  # over the fuzz run's 0.5 MB limit
        st.binary(max_size=512).map(lambda b: b"%PDF-1.4\n" + b),  # malformed PDF
        st.just("encrypted-pdf"),
        st.text(max_size=3000).map(str.encode),
    )
    files = st.lists(st.tuples(file_name, contents), min_size=1, max_size=3).map(lambda fs: _write(files_dir, fs))
    question = st.one_of(text, st.sampled_from(NASTY), st.just("q" * 3000))
    flag = st.sampled_from(["--good", "--bad"])
    return st.one_of(
        st.tuples(st.just("kb"), st.just("create"), names),
        st.tuples(st.just("kb"), st.just("show"), names),
        st.just(("kb", "list")),
        st.tuples(st.just("kb"), st.just("delete"), names, st.just("--yes")),
        st.builds(lambda kb, paths: ("ingest", kb, *paths), names, files),
        st.tuples(st.just("docs"), names),
        st.tuples(st.just("remove"), ids),
        st.tuples(st.just("ask"), names, question),
        st.tuples(st.just("ask"), names, question, st.just("--task"), st.sampled_from(["qa", "summarize", "nope"])),
        st.one_of(st.tuples(st.just("status"), ids), st.just(("status",))),
        st.tuples(st.just("result"), ids, st.sampled_from(["--json", "--show-clues"])),
        st.tuples(st.just("feedback"), ids, flag, st.just("--answer"), question),
        st.tuples(st.just("repair"), names, st.just("--quick")),
        st.tuples(st.just("reindex"), names, st.just("--no-wait")),
        st.tuples(
            st.just("keys"),
            st.just("create"),
            st.just("--role"),
            st.sampled_from(["reader", "admin", "x"]),
            st.just("--kb"),
            names,
        ),
        st.tuples(st.just("keys"), st.just("revoke"), numbers.map(str)),
        st.just(("keys", "list")),
        st.just(("adapters", "list")),
        st.tuples(st.just("adapters"), st.just("promote"), names),
    )


def _write(directory: Path, files: list[tuple[str, bytes | str]]) -> list[str]:
    case = Path(tempfile.mkdtemp(dir=directory))
    paths = []
    for i, (name, content) in enumerate(files):
        path = case / f"{i}-{name}"
        try:
            path.write_bytes(_encrypted_pdf() if content == "encrypted-pdf" else content)
        except OSError:  # a name this file system refuses (too long in bytes): the command gets a missing file
            path = case / f"{i}-missing"
        paths.append(str(path))
    return paths


def _encrypted_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=100, height=100)
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def run_campaign(home: Path, cases: int, seed: int = 0) -> dict:
    """``cases`` generated commands; a traceback is any exception click did not turn into one error line."""
    from click.testing import CliRunner
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as fixed_seed
    from hypothesis import settings as hyp_settings

    from cli import cli
    from cli.base import UNEXPECTED

    home.mkdir(parents=True, exist_ok=True)
    outcome: dict = {"cases": 0, "tracebacks": 0, "exit_codes": {}, "examples": []}
    previous = os.environ.get("MEMORAG_MAX_DOCUMENT_MB")
    os.environ["MEMORAG_MAX_DOCUMENT_MB"] = "0.5"

    seed_document = home / "seed.txt"
    seed_document.write_text("The lighthouse at Gull Point was lit in 1781 by its first keeper, Amos Pell.\n" * 20)

    @fixed_seed(seed)
    @hyp_settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(command=_strategies(home))
    def case(command: tuple[str, ...]) -> None:
        result = CliRunner().invoke(cli, list(command), catch_exceptions=True, prog_name="manage.py")
        outcome["cases"] += 1
        if command[:2] == ("kb", "delete") and command[2] in KBS and result.exit_code == 0:  # keep them to fuzz
            CliRunner().invoke(cli, ["kb", "create", command[2]])
            CliRunner().invoke(cli, ["ingest", command[2], str(seed_document)])
        codes = outcome["exit_codes"]
        codes[str(result.exit_code)] = codes.get(str(result.exit_code), 0) + 1
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if crashed or "Traceback" in result.output or f"error: {UNEXPECTED}" in result.output:
            outcome["tracebacks"] += 1
            if len(outcome["examples"]) < 5:
                why = repr(result.exception) if crashed else result.output.strip().splitlines()[-1]
                outcome["examples"].append({"command": [c[:80] for c in command], "error": why[:300]})

    for kb in KBS:  # knowledge bases with a ready document, so asks and ingests reach past the first check
        CliRunner().invoke(cli, ["kb", "create", kb])
        CliRunner().invoke(cli, ["ingest", kb, str(seed_document), "--wait"])
    started = time.monotonic()
    try:
        case()
    finally:
        if previous is None:
            os.environ.pop("MEMORAG_MAX_DOCUMENT_MB", None)
        else:
            os.environ["MEMORAG_MAX_DOCUMENT_MB"] = previous
    outcome["seconds"] = round(time.monotonic() - started, 1)
    outcome["inconsistent_rows"], outcome["rows"] = inconsistent_rows()
    return outcome


def inconsistent_rows(timeout: float = 300) -> tuple[int, int]:
    """Rows that no state of their knowledge base explains, once in-flight work has ended; and how many rows."""
    from sqlmodel import select

    from store import db

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.session() as s:
            docs = list(s.exec(select(db.Document)))
            queries = list(s.exec(select(db.Query)))
            answered = set(s.exec(select(db.Answer.query_id)))
            kbs = set(s.exec(select(db.KnowledgeBase.id)))
        if not any(r.status in ("queued", "processing", "repairing", "waiting for repair") for r in [*docs, *queries]):
            break
        time.sleep(1.0)
    bad = 0
    for doc in docs:
        ok = doc.kb_id in kbs and (
            (doc.status == "ready" and (doc.chunk_count or 0) > 0 and (doc.token_count or 0) > 0)
            or (doc.status == "failed" and bool(doc.error))
        )
        bad += not ok
    for query in queries:
        ok = query.kb_id in kbs and (
            (query.status == "done" and query.id in answered) or (query.status == "failed" and bool(query.error))
        )
        bad += not ok
    return bad, len(docs) + len(queries)


def isolation_campaign(redis_url: str, kbs: int, chunks: int, searches: int, seed: int = 0) -> dict:
    """Random knowledge bases (odd names included) on the embedded index and on Weaviate (the recorded-protocol
    fake); every search must return only its own knowledge base's chunks."""
    import numpy as np
    import redis

    from store.vectors import Chunk, EmbeddedIndex
    from store.weaviate import WeaviateIndex
    from tests.fake_weaviate import FakeWeaviate

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake server's request log
    rng = random.Random(seed)
    names = list(dict.fromkeys(["a", "A", "a-", "a_b", "x" * 64, *NASTY[:6]] + [_random_name(rng) for _ in range(kbs)]))
    names = [n for n in names if n][:kbs]
    fake = FakeWeaviate().start()
    results = {}
    try:
        indexes = {
            "embedded": EmbeddedIndex(redis.Redis.from_url(redis_url), prefix=f"memorag:isolation:{seed}"),
            "weaviate": WeaviateIndex(fake.url, grpc_port=fake.grpc_port),
        }
        generator = np.random.default_rng(seed)
        for label, index in indexes.items():
            owner: dict[str, str] = {}
            for number, kb in enumerate(names):
                docs = [f"k{number}-{j}" for j in range(chunks)]
                owner.update(dict.fromkeys(docs, kb))
                batch = [Chunk(doc, 0, f"text {doc}", 0, 9, 0, 3) for doc in docs]
                index.upsert(kb, batch, generator.standard_normal((chunks, 16)).astype(np.float32))
            cross = hits = 0
            for _ in range(searches):
                kb = rng.choice(names)
                [found] = index.search(kb, generator.standard_normal((1, 16)).astype(np.float32), 10)
                hits += len(found)
                cross += sum(owner.get(chunk.doc_id) != kb for chunk, _ in found)
            results[label] = {"kbs": len(names), "searches": searches, "hits": hits, "cross_kb_hits": cross}
        indexes["weaviate"].close()
    finally:
        fake.stop()
    return {"cross_kb_hits": sum(r["cross_kb_hits"] for r in results.values()), "indexes": results}


def _random_name(rng: random.Random) -> str:
    alphabet = "abcXYZ019-_. 'é名$;`"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
