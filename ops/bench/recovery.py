"""How long a dead worker's work takes to come back, at the settings users run: the broker's visibility timeout
at its default (MEMORAG_TASK_TIMEOUT_S, 2 hours), the reconciler's grace and interval at theirs.

Each scenario is a deployment of real processes (ops/bench/deployment.py: Valkey, a database, ``manage.py
worker`` processes, ``manage.py beat``) and a tiny random model, and reports seconds from the fault to the
answer (or to the document being ready):

- question_kill: the only worker is SIGKILLed while it answers; a new worker starts at once (`manage.py up`).
- question_kill_two: two workers, the one answering is SIGKILLed and none is started.
- ingest_kill: the only worker is SIGKILLed while it ingests a document; a new one starts.
- poison: a document kills its worker on every delivery (the kernel's OOM killer, played by this script);
  it must end failed after MEMORAG_MAX_DELIVERIES with the reason, and the next document be ingested.
- flushall: the store is wiped and a question asked at once: it waits for the repair and is answered.

    python ops/bench/recovery.py --json bench-out/recovery.json                  # default settings
    python ops/bench/recovery.py --reconcile-interval 3 --only question_kill     # faster, for a look
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
from chaos import load_kb, pieces, rows
from common import print_table, write_json
from deployment import Deployment, deployment, tiny_llama, wait_until

QUESTION = "What does the author say about startups?"


def _row(kind: str, row_id: int):
    from store import db

    with db.session() as s:
        return s.get(db.Query if kind == "q" else db.Document, row_id)


def _kill_when(d: Deployment, name: str, predicate, timeout: float = 120.0) -> float:
    """SIGKILL worker ``name`` the moment ``predicate()`` holds (polled every 20 ms); returns when."""
    wait_until(predicate, timeout, every=0.02, what="the moment to kill")
    d.kill_worker(name)
    return time.monotonic()


def _fresh(d: Deployment, name: str, queues: str = "memory,query") -> None:
    """A new worker process: nothing loaded yet, so its first question spends seconds loading the embedder."""
    if name in d.workers:
        d.stop_worker(name)
    d.start_worker(name, queues)
    d.wait_for_worker(name)


def _answered_after(query_id: int, killed: float, timeout: float) -> dict:
    wait_until(lambda: _row("q", query_id).status in ("done", "failed"), timeout, every=0.5, what="the answer")
    row = _row("q", query_id)
    return {"status": row.status, "recover_s": round(time.monotonic() - killed, 1), "error": row.error}


def question_kill(d: Deployment, kb: str = "rec-q", restart: bool = True, timeout: float = 600) -> dict:
    """The only worker (w2 is stopped) is killed while it answers; w1 starts again at once."""
    from service import queries

    with contextlib.suppress(KeyError):
        d.stop_worker("w2")
    load_kb(kb, pieces(2, offset=40))
    wait_until(lambda: all(x.status == "ready" for x in rows([kb])[0]), 180, what="documents ready")
    _fresh(d, "w1")
    query_id = queries.ask(kb, QUESTION).id
    killed = _kill_when(d, "w1", lambda: _row("q", query_id).status == "processing")
    if restart:
        d.start_worker("w1")
    return _answered_after(query_id, killed, timeout)


def question_kill_two(d: Deployment, kb: str = "rec-q2", timeout: float = 600) -> dict:
    """Two workers; the one answering is killed and none is started. w1 is warm (answers in well under a
    second); w2 is fresh (its first question spends seconds loading the embedder): a question still processing
    after a second is w2's, and w2 is killed. One w1 answered is asked again."""
    from service import queries

    load_kb(kb, pieces(2, offset=50))
    wait_until(lambda: all(x.status == "ready" for x in rows([kb])[0]), 180, what="documents ready")
    queries.ask(kb, "Warm up: " + QUESTION)
    _fresh(d, "w2", "query")
    for attempt in range(10):
        query_id = queries.ask(kb, f"{QUESTION} ({attempt})").id
        wait_until(lambda q=query_id: _row("q", q).status != "queued", 60, every=0.02, what="a worker to take it")
        time.sleep(1.0)
        if _row("q", query_id).status == "processing":
            d.kill_worker("w2")
            result = _answered_after(query_id, time.monotonic(), timeout)
            d.start_worker("w2")
            d.wait_for_worker("w2")
            return result | {"asked": attempt + 1}
    raise RuntimeError("w1 answered every question: w2 never took one")


def ingest_kill(d: Deployment, kb: str = "rec-d", timeout: float = 600) -> dict:
    from service import bases, documents

    bases.ensure_kb(kb)
    with contextlib.suppress(KeyError):
        d.stop_worker("w2")
    _fresh(d, "w1")
    [added] = documents.add_documents(kb, pieces(1, chars=20000, offset=60))
    killed = _kill_when(d, "w1", lambda: _row("d", added.id).status == "processing")
    d.start_worker("w1")
    wait_until(lambda: _row("d", added.id).status in ("ready", "failed"), timeout, every=0.5, what="the document")
    return {"status": _row("d", added.id).status, "recover_s": round(time.monotonic() - killed, 1)}


def poison(d: Deployment, kb: str = "rec-poison", timeout: float = 600) -> dict:
    """Every delivery of the first document is killed; the second must still be ingested."""
    from service import bases, documents

    bases.ensure_kb(kb)
    with contextlib.suppress(KeyError):
        d.stop_worker("w2")
    _fresh(d, "w1")
    bad, good = documents.add_documents(kb, pieces(2, chars=20000, offset=70))
    started, kills = time.monotonic(), 0
    deadline = started + timeout
    while time.monotonic() < deadline and _row("d", bad.id).status != "failed":
        attempts = _row("d", bad.id).attempts
        try:
            _kill_when(
                d, "w1", lambda a=attempts: (r := _row("d", bad.id)).status == "failed" or r.attempts > a, timeout=240
            )
        except TimeoutError:
            break
        if _row("d", bad.id).status == "failed":  # the worker ended it before dying again: it is back
            d.start_worker("w1")
            break
        kills += 1
        d.start_worker("w1")
    wait_until(lambda: _row("d", good.id).status in ("ready", "failed"), timeout, every=0.5, what="the next document")
    row = _row("d", bad.id)
    return {
        "kills": kills,
        "status": row.status,
        "error": row.error,
        "next_document": _row("d", good.id).status,
        "seconds": round(time.monotonic() - started, 1),
    }


def flushall(d: Deployment, kb: str = "rec-wipe", timeout: float = 600) -> dict:
    import redis

    from service import queries

    docs = pieces(2, offset=80)
    load_kb(kb, docs)
    wait_until(lambda: all(x.status == "ready" for x in rows([kb])[0]), 180, what="documents ready")
    # A question the documents answer: one of their own sentences, asked back ("What about ...?").
    sentence = max(docs[0][1].split(". ")[1:-1], key=len).strip()
    redis.Redis.from_url(d.redis_url).flushall()
    wiped = time.monotonic()
    query_id = queries.ask(kb, f"What is said about this: {sentence}?").id
    seen: set[str] = set()
    wait_until(
        lambda: seen.add(_row("q", query_id).status) or _row("q", query_id).status in ("done", "failed"),
        timeout, every=0.1, what="the answer",
    )  # fmt: skip
    from sqlmodel import select

    from store import db

    with db.session() as s:
        answer = s.exec(select(db.Answer).where(db.Answer.query_id == query_id)).first()
    return {
        "status": _row("q", query_id).status,
        "statuses_seen": sorted(seen),
        "declined": bool(answer and "do not answer" in answer.text),
        "answered_with_its_sentence": bool(answer and " ".join(sentence.split())[:40] in " ".join(answer.text.split())),
        "evidence": len(answer.evidence) if answer else 0,
        "recover_s": round(time.monotonic() - wiped, 1),
    }


SCENARIOS = {
    "question_kill": question_kill,
    "question_kill_two": question_kill_two,
    "ingest_kill": ingest_kill,
    "poison": poison,
    "flushall": flushall,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kill scenario (p50 and max reported)")
    parser.add_argument("--reconcile-interval", type=int, default=None, help="default: the setting's (60 s)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from core.settings import Settings

    defaults = Settings()
    options = {
        "task_timeout_s": defaults.task_timeout_s,
        "reconcile_interval": args.reconcile_interval or defaults.reconcile_interval,
        "grace_s": defaults.reconcile_grace_s,
    }
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memorag-recovery-")))
        model = str(tiny_llama(home / "tiny-llama"))
        with deployment(home / "run", model, workers=2, **options) as d:
            for name in args.only or list(SCENARIOS):
                runs = []
                for i in range(args.repeat if name not in ("poison", "flushall") else 1):
                    print(f"== {name} ({i + 1})", flush=True)
                    runs.append(SCENARIOS[name](d, kb=f"rec-{name}-{i}"))
                    print(runs[-1], flush=True)
                times = [r.get("recover_s", r.get("seconds")) for r in runs]
                results[name] = {
                    "runs": len(runs),
                    "status": ",".join(sorted({r["status"] for r in runs})),
                    "p50_s": statistics.median(times),
                    "max_s": max(times),
                    "detail": runs,
                }
    print_table([{"scenario": k} | v for k, v in results.items()], ["scenario", "runs", "status", "p50_s", "max_s"],
                f"recovery: visibility timeout {options['task_timeout_s']} s, grace {options['grace_s']} s, "
                f"reconcile every {options['reconcile_interval']} s")  # fmt: skip
    write_json(args.json, {"settings": options, "scenarios": results})


if __name__ == "__main__":
    main()
