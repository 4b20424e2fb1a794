"""Fault campaign: workers killed, the broker restarted with and without its AOF, the store wiped, bytes flipped,
PostgreSQL stopped, a burst of questions, fuzzed commands, random knowledge bases; then the ledger.

Every scenario runs against a deployment of real processes (ops/bench/deployment.py): its own Valkey, a fresh
PostgreSQL database, two ``manage.py worker`` processes and ``manage.py beat`` (the reconciler's schedule).
The model is a tiny random llama by default: faults, not answers, are measured (``--model default`` for the
bundled one). tests/test_chaos.py runs each scenario small.

    python ops/bench/chaos.py --json bench-out/chaos.json            # every scenario, full size
    python ops/bench/chaos.py --only corruption --json out.json      # one
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path before the project's `service` package is imported)
from common import DATA, print_table, write_json
from deployment import Deployment, PrivatePostgres, deployment, tiny_llama, wait_until

from store.vectors import intact

QUESTIONS = [
    "What does the author say about startups?",
    "What advice is given about investors?",
    "How should founders think about competitors?",
    "What makes a good idea?",
    "What is said about hard problems?",
    "What does the author say about cities?",
    "How does the author describe good writing?",
    "What is said about luck?",
]
IN_FLIGHT = ("queued", "processing", "repairing", "waiting for repair")


# documents and the ledger -------------------------------------------------------------------------------------
def pieces(n: int, chars: int = 2500, offset: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct documents cut from the essays in ../shared/data (name, text)."""
    text = "\n\n".join(p.read_text() for p in sorted((DATA / "needle" / "essays").glob("*.txt")))
    out = []
    for i in range(offset, offset + n):
        start = (i * chars) % max(1, len(text) - chars)
        out.append((f"piece-{i:04d}.txt", f"[{i}] " + text[start : start + chars]))
    return out


def rows(kbs: list[str]):
    from sqlmodel import select

    from store import db

    with db.session() as s:
        ids = list(s.exec(select(db.KnowledgeBase.id).where(db.KnowledgeBase.name.in_(kbs))))
        docs = list(s.exec(select(db.Document).where(db.Document.kb_id.in_(ids))))
        queries = list(s.exec(select(db.Query).where(db.Query.kb_id.in_(ids))))
        answers = list(s.exec(select(db.Answer).where(db.Answer.query_id.in_([q.id for q in queries] or [-1]))))
    return docs, queries, answers


def settle(kbs: list[str], timeout: float) -> float:
    """Wait until no row of ``kbs`` is in flight; returns the seconds it took."""
    started = time.monotonic()

    def quiet() -> bool:
        docs, queries, _ = rows(kbs)
        return not any(r.status in IN_FLIGHT for r in [*docs, *queries])

    wait_until(quiet, timeout, every=1.0, what="every row to finish")
    return time.monotonic() - started


def ledger(kbs: list[str]) -> dict[str, int]:
    """What the rows and stores say: lost work, duplicates, memories that do not check out."""
    from collections import Counter

    from service.stores import Stores
    from store.errors import MemoryProblem
    from store.memories import MemoryNotFound

    docs, queries, answers = rows(kbs)
    stores, names = Stores(), _kb_names()
    explained = {"ready", "done"}
    lost = sum(1 for r in [*docs, *queries] if r.status not in explained and not (r.status == "failed" and r.error))
    per_query = Counter(a.query_id for a in answers)
    done_without = sum(1 for q in queries if q.status == "done" and q.id not in per_query)
    duplicate_chunks = invalid = 0
    for doc in docs:
        if doc.status != "ready":
            continue
        kb, key = names[doc.kb_id], doc.public_id
        duplicate_chunks += max(0, stores.index.document_counts(kb, [key])[key] - (doc.chunk_count or 0))
        try:
            stores.memories.get(kb, key)
        except (MemoryNotFound, MemoryProblem):
            invalid += 1
    return {
        "documents": len(docs),
        "queries": len(queries),
        "lost": lost + done_without,
        "duplicate_answers": sum(n - 1 for n in per_query.values()),
        "duplicate_chunks": duplicate_chunks,
        "invalid_memories": invalid,
        "failed": sum(1 for r in [*docs, *queries] if r.status == "failed"),
    }


def _kb_names() -> dict[int, str]:
    from sqlmodel import select

    from store import db

    with db.session() as s:
        return {kb_id: name for kb_id, name in s.exec(select(db.KnowledgeBase.id, db.KnowledgeBase.name))}


def load_kb(kb: str, docs: list[tuple[str, str]], first_ready: bool = True) -> None:
    """Create ``kb`` and send its documents; with ``first_ready``, wait until one is ready (questions need one)."""
    from service import bases, documents

    bases.ensure_kb(kb)
    documents.add_documents(kb, docs[:1])
    if first_ready:
        wait_until(lambda: any(d.status == "ready" for d in rows([kb])[0]), 180, what="a first ready document")
    documents.add_documents(kb, docs[1:])


def ask_all(kb: str, n: int) -> list[int]:
    from service import queries

    return [queries.ask(kb, QUESTIONS[i % len(QUESTIONS)] + f" ({i})").id for i in range(n)]


# scenarios ----------------------------------------------------------------------------------------------------
def worker_kill(d: Deployment, docs: int = 20, questions: int = 100, kills: int = 20, seed: int = 0) -> dict:
    """SIGKILL a random worker at random moments while documents ingest and questions wait; restart it each time."""
    rng, kb = random.Random(seed), "chaos-kill"
    started = time.monotonic()
    load_kb(kb, pieces(docs))
    ask_all(kb, questions)
    for _ in range(kills):
        time.sleep(rng.uniform(0.5, 3.0))
        name = rng.choice(sorted(d.workers))
        d.kill_worker(name)
        d.start_worker(name)
        d.wait_for_worker(name)
    settle_s = settle([kb], timeout=120 + 6 * (docs + questions))
    return {"kills": kills, "seconds": round(time.monotonic() - started, 1), "settle_s": round(settle_s, 1)} | ledger(
        [kb]
    )


def broker_restart(d: Deployment, aof: bool, docs: int = 10, questions: int = 30, down_s: float = 2.0) -> dict:
    """kill -9 Valkey mid-load and start it again, with its AOF (most kept) or without (every message lost)."""
    kb = f"chaos-broker-{'aof' if aof else 'noaof'}"
    started = time.monotonic()
    load_kb(kb, pieces(docs, offset=100 if aof else 200))
    ask_all(kb, questions)
    time.sleep(1.5)  # mid-load
    d.kill_valkey()
    time.sleep(down_s)
    d.aof = aof  # without it the server comes back empty: queues, memories, chunks, all gone
    d.start_valkey()
    d.aof = True
    settle_s = settle([kb], timeout=180 + 6 * (docs + questions))
    return {"aof": aof, "seconds": round(time.monotonic() - started, 1), "settle_s": round(settle_s, 1)} | ledger([kb])


def store_wipe(d: Deployment, kbs: int = 3, docs_per_kb: int = 4) -> dict:
    """FLUSHALL with knowledge bases ready; ``repair`` rebuilds every chunk and memory from the database."""
    import redis

    from service import repair
    from service.stores import Stores

    names = [f"chaos-wipe-{i}" for i in range(kbs)]
    for i, kb in enumerate(names):
        load_kb(kb, pieces(docs_per_kb, offset=300 + i * docs_per_kb), first_ready=False)
    settle(names, timeout=300)
    docs, _, _ = rows(names)
    expected = {(d_.kb_id, d_.public_id): d_.chunk_count for d_ in docs}
    tokens = sum(d_.token_count or 0 for d_ in docs)
    redis.Redis.from_url(d.redis_url).flushall()
    started = time.monotonic()
    wait_until(lambda: _workers_back(d), 30, what="the workers' heartbeats")
    repair.repair(verify=False)  # the periodic pass may have found it first: either sends the rebuilds
    settle(names, timeout=300)
    recover_s = time.monotonic() - started
    stores, kb_names = Stores(), _kb_names()
    counted = {k: stores.index.document_counts(kb_names[k[0]], [k[1]])[k[1]] for k in expected}
    memories = sum(stores.memories.exists(kb_names[k[0]], k[1]) for k in expected)
    tickets = [t for kb in names for t in ask_all(kb, 2)]
    settle(names, timeout=300)
    answered = sum(1 for q in rows(names)[1] if q.id in tickets and q.status == "done")
    return {
        "tokens": tokens,
        "repaired_documents": sum("repair_s" in doc.timings for doc in rows(names)[0]),
        "chunks_back": sum(counted.values()),
        "chunks_before": sum(expected.values()),
        "memories_back": memories,
        "memories_before": len(expected),
        "answered_after": f"{answered}/{len(tickets)}",
        "recover_s": round(recover_s, 2),
        "recover_s_per_10k_tokens": round(recover_s * 10_000 / max(1, tokens), 2),
    } | ledger(names)


def _workers_back(d: Deployment) -> bool:
    import redis

    return len(redis.Redis.from_url(d.redis_url).keys("memorag:worker:*")) >= len(d.workers)


def corruption(d: Deployment, n: int = 100, questions: int = 10, seed: int = 0) -> dict:
    """Flip a bit in ``n`` memories' Redis chunks (and in half of them, their disk copy too) and ``n`` vector-index
    entries (the chunk's JSON for half, its vector for the others); questions asked before the repair are never
    answered from a changed entry. A memory with one good tier is mended from it, one with none is re-formed."""
    import redis

    from service import repair
    from service.stores import Stores

    rng, kb = random.Random(seed), "chaos-corrupt"
    load_kb(kb, pieces(n, chars=1200, offset=400), first_ready=False)
    settle([kb], timeout=120 + 3 * n)
    client, stores = redis.Redis.from_url(d.redis_url), Stores()
    docs = [doc.public_id for doc in rows([kb])[0] if doc.status == "ready"][:n]
    versions, bad_chunks, both_tiers = {}, set(), set()
    for i, doc in enumerate(docs):
        manifest = stores.memories.manifest(kb, doc)
        key = stores.memories.chunk_key(kb, doc, manifest.version, 0)
        client.set(key, _flipped(client.get(key), rng))
        if i % 2 == 0:
            path = stores.memories.disk.data_path(kb, doc, manifest.version)
            path.write_bytes(_flipped(path.read_bytes(), rng))
            both_tiers.add(doc)
        versions[doc] = manifest.version
        chunk_id = f"{doc}#{rng.randrange(rows_chunk_count(kb, doc))}"
        entries_key = stores.index.key(kb, "chunks" if i % 2 else "vectors")
        client.hset(entries_key, chunk_id, _flipped(client.hget(entries_key, chunk_id), rng))
        bad_chunks.add(chunk_id)
    client.incr(stores.index.version_key(kb))  # as any later write would: every worker reads the index again
    tickets = ask_all(kb, questions)
    settle([kb], timeout=300)
    texts = {doc.public_id: doc.text for doc in rows([kb])[0]}
    evidence = [e for a in rows([kb])[2] if a.query_id in tickets for e in a.evidence]
    # evidence whose text is not the document's own at its offsets was read from a changed entry
    served = sum(e["text"] != texts[e["doc_id"]][e["char_start"] : e["char_end"]] for e in evidence)
    repair.repair(kb, verify=True)  # whatever the questions and the periodic pass have not found yet
    settle([kb], timeout=300)
    # Detected = replaced: no tier of a memory serves the changed bytes, a vector entry checks out again.
    memory_sound = {doc for doc in docs if _memory_sound(stores.memories, kb, doc)}
    memory_rebuilt = {doc for doc in docs if stores.memories.manifest(kb, doc).version != versions[doc]}
    chunks, entries = (client.hmget(stores.index.key(kb, part), sorted(bad_chunks)) for part in ("chunks", "vectors"))
    vectors_rebuilt = sum(intact(c, e) is not None for c, e in zip(chunks, entries, strict=True))
    verified = stores.index.verify(kb, docs)
    still_bad = sum(verified[doc] != rows_chunk_count(kb, doc) for doc in docs)
    return {
        "memory_chunks_corrupted": len(docs),
        "memory_disk_copies_corrupted": len(both_tiers),
        "memory_detected": len(memory_sound),
        "memory_reformed": len(memory_rebuilt),
        "vector_entries_corrupted": len(bad_chunks),
        "vector_detected": vectors_rebuilt,
        "evidence_checked": len(evidence),
        "served_from_corrupt": served,
        "still_corrupt_after": still_bad,
    } | ledger([kb])


def rows_chunk_count(kb: str, doc: str) -> int:
    return next(r.chunk_count for r in rows([kb])[0] if r.public_id == doc)


def _flipped(raw: bytes, rng: random.Random) -> bytes:
    """``raw`` with one random bit changed."""
    out = bytearray(raw)
    out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _memory_sound(store, kb: str, doc: str) -> bool:
    """Redis holds an intact copy or none, and the disk copy checks out."""
    from store.errors import MemoryProblem
    from store.memories import MemoryNotFound

    try:
        store.get_hot(kb, doc, None)
    except MemoryNotFound:
        pass
    except MemoryProblem:
        return False
    try:
        return store.disk.get(kb, doc) is not None
    except MemoryProblem:
        return False


def database_restart(d: Deployment, postgres: PrivatePostgres, down_s: float = 30, docs: int = 6, questions: int = 20):
    """PostgreSQL stops mid-load for ``down_s``: clear one-line errors meanwhile, then every task finishes."""
    from service import queries

    kb = "chaos-database"
    started = time.monotonic()
    load_kb(kb, pieces(docs, offset=600))
    ask_all(kb, questions)
    time.sleep(1.0)
    postgres.stop(mode="immediate")
    errors, tries = [], 0
    down_until = time.monotonic() + down_s
    while time.monotonic() < down_until:
        tries += 1
        try:
            queries.ask(kb, "Is the database there?")
        except Exception as exc:  # the service's error, as the CLI and API would show it
            errors.append(str(exc))
        time.sleep(min(2.0, max(0.0, down_until - time.monotonic())))
    postgres.start()
    settle_s = settle([kb], timeout=300 + 6 * (docs + questions))
    clear = [e for e in errors if e.startswith("database ") and "\n" not in e and "Traceback" not in e]
    return {
        "down_s": down_s,
        "asks_while_down": tries,
        "clear_errors": f"{len(clear)}/{tries}",
        "error_example": (errors or [""])[0][:160],
        "seconds": round(time.monotonic() - started, 1),
        "settle_s": round(settle_s, 1),
    } | ledger([kb])


def _submit(args: tuple[str, int, int]) -> list[int]:
    kb, n, offset = args
    from store import db

    db.reset_engines()  # a forked child builds its own engine
    from service import queries

    return [queries.ask(kb, QUESTIONS[(offset + i) % len(QUESTIONS)] + f" [{offset + i}]").id for i in range(n)]


def load(d: Deployment, questions: int = 200, submitters: int = 4) -> dict:
    """``questions`` from ``submitters`` concurrent processes against the two workers: queue wait and service time."""
    import multiprocessing

    kb = "chaos-load"
    load_kb(kb, pieces(3, offset=700), first_ready=False)
    settle([kb], timeout=300)
    per = questions // submitters
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(submitters) as pool:
        pool.map(_submit, [(kb, per, i * per) for i in range(submitters)])
    settle([kb], timeout=120 + 10 * questions)
    elapsed = time.monotonic() - started
    _, queries, _ = rows([kb])
    done = [q for q in queries if q.status == "done" and q.started_at and q.finished_at]
    waits = [(q.started_at - q.created_at).total_seconds() for q in done]
    service = [(q.finished_at - q.started_at).total_seconds() for q in done]
    return {
        "answered": f"{len(done)}/{len(queries)}",
        "seconds": round(elapsed, 1),
        "questions_per_s": round(len(done) / elapsed, 2),
        "queue_wait_p50_s": round(_pct(waits, 50), 2),
        "queue_wait_p95_s": round(_pct(waits, 95), 2),
        "service_p50_s": round(_pct(service, 50), 2),
        "service_p95_s": round(_pct(service, 95), 2),
    } | ledger([kb])


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def fuzz(d: Deployment, cases: int = 1000, seed: int = 0) -> dict:
    from fuzzing import run_campaign

    return run_campaign(d.home / "fuzz", cases, seed)


def isolation(d: Deployment, kbs: int = 30, chunks: int = 40, searches: int = 200, seed: int = 0) -> dict:
    from fuzzing import isolation_campaign

    return isolation_campaign(d.redis_url, kbs, chunks, searches, seed)


SCENARIOS: dict[str, Callable] = {
    "worker_kill": worker_kill,
    "broker_restart_aof": lambda d, **kw: broker_restart(d, True, **kw),
    "broker_restart_no_aof": lambda d, **kw: broker_restart(d, False, **kw),
    "store_wipe": store_wipe,
    "corruption": corruption,
    "database_restart": database_restart,
    "load": load,
    "fuzz": fuzz,
    "isolation": isolation,
}
COLUMNS = ["scenario", "lost", "duplicate_answers", "duplicate_chunks", "invalid_memories", "seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable)")
    parser.add_argument("--model", default="tiny", help="'tiny' (a random 2-layer llama) or a model spec")
    parser.add_argument("--home", help="working directory (default: a temporary one)")
    args = parser.parse_args()
    chosen = args.only or list(SCENARIOS)
    with contextlib.ExitStack() as stack:
        home = Path(args.home or stack.enter_context(tempfile.TemporaryDirectory(prefix="memorag-chaos-")))
        model = str(tiny_llama(home / "tiny-llama")) if args.model == "tiny" else args.model
        if model == "default":  # the prepared bundled model, by its directory: the deployment has its own home
            from agent.models import default_model_dir

            model = str(default_model_dir())
        results = run(chosen, home, model)
    for name, result in results.items():
        print(f"{name}: {result}")
    print_table([{"scenario": k} | v for k, v in results.items()], COLUMNS, "chaos (0 is the target for each count)")
    write_json(args.json, {"model": args.model, "scenarios": results})


def run(chosen: list[str], home: Path, model: str, sizes: dict[str, dict] | None = None) -> dict[str, dict]:
    """Each chosen scenario on one shared deployment (database_restart on its own, with a private cluster)."""
    sizes, results = sizes or {}, {}
    shared = [name for name in chosen if name != "database_restart"]
    if shared:
        with deployment(home / "shared", model) as d:
            for name in shared:
                started = time.monotonic()
                print(f"== {name}", flush=True)
                results[name] = SCENARIOS[name](d, **sizes.get(name, {}))
                results[name].setdefault("seconds", round(time.monotonic() - started, 1))
    if "database_restart" in chosen:
        postgres = PrivatePostgres().create()
        try:
            with deployment(home / "db", model, database_url=postgres.url) as d:
                print("== database_restart", flush=True)
                results["database_restart"] = database_restart(d, postgres, **sizes.get("database_restart", {}))
        finally:
            postgres.destroy()
    return results


if __name__ == "__main__":
    main()
