"""Evidence from the memory's attention: does the memory know where in the document the answer lives?

Each question is prefilled once on top of its document's memory (the default scorer and beta); each
(layer, KV head)'s attention over the memory slots, mapped back to the chunks their tokens came from,
ranks the chunks (``agent/memory/pointing.py``). Heads are chosen on the dev split (QMSum train): every
head's recall@5 alone, then the top-N heads and the RRF weight of their ranking beside the question's that
fuse best. The choice is then reported on held-out sets (QMSum val, L-Eval natural_question), against the
default retrieval (``rag``: the question alone, hybrid, chunks with their context) in the same run, and with
``--clues`` against clue writing and both together. Latency: what each adds to retrieval per question.

    python ops/bench/memory_evidence.py --write-heads --json bench-out/memory-evidence.json

Memories are kept in ``bench-out/memories`` between runs (keyed by model, scorer, beta and text).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import numpy as np
import torch
from common import DATA, BenchRedis, ClueCache, print_table, write_json

from agent import programs
from agent.datasets import load_qmsum
from agent.evaluation import load_samples
from agent.memory.pointing import Heads, chunk_attention, chunk_scores, heads_file, slots_per_chunk
from agent.memory.types import GlobalMemory
from agent.metrics import answer_in, gold_chunk_ids, hit_at_k, recall_at_k
from agent.models import load_model
from agent.pipeline import memorize
from agent.retrieval import chunk_document, get_embedder, retrieve
from core.settings import get_settings
from store.vectors import EmbeddedIndex, rrf

ROOT = Path(__file__).resolve().parents[2]
MEMORIES = ROOT / "bench-out" / "memories"
DEPTH = 20  # how deep the question's own ranking goes before fusion
HEAD_COUNTS = (1, 2, 4, 8, 16, 32)
WEIGHTS = (0.25, 0.5, 1.0)
SIGNALS = ("attention", "per_slot")


def cached_memory(lm, doc_id: str, text: str, settings) -> GlobalMemory:
    digest = hashlib.sha256(f"{lm.fingerprint}|{settings.scorer}|{settings.beta}|{text}".encode()).hexdigest()[:16]
    path = MEMORIES / f"{doc_id}-{digest}.safetensors"
    if path.exists():
        return GlobalMemory.from_bytes(path.read_bytes())
    started = time.perf_counter()
    memory = memorize(lm, text, settings=settings)
    print(f"{doc_id}: memory of {memory.meta.doc_tokens} tokens in {time.perf_counter() - started:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(memory.to_bytes())
    return memory


def gather(name: str, lm, embedder, index, settings, args, clue_cache: ClueCache | None) -> list[dict]:
    """Per question: gold chunk ids, the question's ranking, every head's chunk shares, clue ranking."""
    if name.startswith("qmsum"):
        split = name.split("_")[1]
        samples = list(load_qmsum(DATA / "qmsum" / f"{split}.jsonl", limit=args.meetings))
    else:
        samples = [s for s in load_samples("leval", DATA / "leval" / f"{name}.jsonl") if s.text][: args.documents]
    rows = []
    for sample in samples:
        chunks = chunk_document(sample.doc_id, sample.text, lm.tokenizer)
        if name.startswith("qmsum"):
            asked = [(q, gold_chunk_ids(chunks, q.evidence)) for q in sample.questions[: args.questions]]
        else:
            asked = [(q, {c.id for c in chunks if answer_in(c.text, q.answers)}) for q in sample.questions]
        asked = [(q, gold) for q, gold in asked if gold][: args.questions]
        if not asked:
            continue
        memory = cached_memory(lm, sample.doc_id, sample.text, settings)
        kb = f"bench-{sample.doc_id}"
        index.drop(kb)
        index.upsert(kb, chunks, embedder.encode([c.searchable for c in chunks]))
        spans = [(c.token_start, c.token_end) for c in chunks]
        ids = [c.id for c in chunks]
        slots = slots_per_chunk(memory, spans)
        started = time.perf_counter()
        written = clue_cache.clues(lm, sample, [q for q, _ in asked], settings.beta) if clue_cache else {}
        written_s = (time.perf_counter() - started) / len(asked)  # ~0 when every clue came from the cache
        for q, gold in asked:
            started = time.perf_counter()
            rag = ranked(retrieve(index, embedder, kb, q.text, k=DEPTH, hybrid=True))
            rag_s = time.perf_counter() - started
            started = time.perf_counter()
            attention = chunk_attention(lm, memory, q.text, spans)
            pointing_s = time.perf_counter() - started
            per_slot = attention / slots.clamp(min=1)  # a chunk's mean share per slot kept from it
            row = {"set": name, "doc": sample.doc_id, "gold": sorted(gold), "rag": rag, "attention": attention,
                   "per_slot": per_slot / per_slot.sum(dim=-1, keepdim=True).clamp(min=1e-9),
                   "ids": ids, "rag_s": rag_s, "pointing_s": pointing_s,
                   "fits_span": len(memory) <= lm.read_span}  # fmt: skip
            if q.text in written:
                clues, row["clues_s"] = programs.Clues(**written[q.text]), written_s
                found = retrieve(
                    index, embedder, kb, q.text, clues.hints(), spans=[clues.quote()], k=DEPTH, hybrid=True
                )
                row["clues"] = ranked(found)
            rows.append(row)
        index.drop(kb)
    return rows


def ranked(evidence) -> list[str]:
    """Best first (``retrieve`` hands evidence back in document order)."""
    return [e.chunk.id for e in sorted(evidence, key=lambda e: -e.score)]


def memory_ranking(row: dict, heads: Heads | None, signal: str = "attention") -> list[str]:
    scores = chunk_scores(row[signal], heads)
    return [row["ids"][i] for i in torch.argsort(scores, descending=True).tolist()]


def fused(*rankings: list[str], weights: list[float]) -> list[str]:
    votes = rrf([r[:DEPTH] for r in rankings], weights)
    return sorted(votes, key=votes.get, reverse=True)


def pooled(row: dict, heads: Heads, signal: str) -> list[str]:
    allowed = set(row["rag"][:DEPTH])
    pointed = [i for i in memory_ranking(row, heads, signal) if i in allowed]
    return fused(row["rag"], pointed, weights=[1, heads.weight])


def recall(rows: list[dict], rank, k: int) -> float:
    return float(np.mean([recall_at_k(set(r["gold"]), rank(r), k) for r in rows])) if rows else 0.0


def choose_heads(rows: list[dict], model: str, k: int) -> tuple[Heads, str, dict]:
    """Per signal (a chunk's share, or its share per kept slot): every head alone on the dev rows, then
    the top-N and the fusion weight that fuse best; the best of both signals."""
    layers, kv_heads, _ = rows[0]["attention"].shape
    best, grid = None, {}
    for signal in SIGNALS:
        alone = {}
        for layer in range(layers):
            for head in range(kv_heads):
                one = Heads(model, ((layer, head),))
                alone[(layer, head)] = recall(rows, lambda r, h=one, s=signal: memory_ranking(r, h, s), k)
        order = sorted(alone, key=alone.get, reverse=True)
        grid[f"{signal}:alone_top"] = [[*h, alone[h]] for h in order[:8]]
        for n in HEAD_COUNTS:
            for w in WEIGHTS:
                heads = Heads(model, tuple(order[:n]), w)

                def rank(r, h=heads, s=signal):
                    return fused(r["rag"], memory_ranking(r, h, s), weights=[1, h.weight])

                grid[f"{signal}:{n}x{w}"] = score = recall(rows, rank, k)
                if best is None or score > best[0]:
                    best = (score, signal, heads)
    _, signal, heads = best
    measured = (
        f"{signal}: top {len(heads.pairs)} of {layers * kv_heads} heads by recall@{k} alone on {len(rows)} "
        f"QMSum train questions, RRF weight {heads.weight} fused best there"
    )
    return Heads(model, heads.pairs, heads.weight, measured), signal, grid


def report(rows: list[dict], heads: Heads, signal: str, k: int) -> dict:
    weight = heads.weight
    strategies = {
        "rag": lambda r: r["rag"],
        "memory": lambda r: memory_ranking(r, heads, signal),
        "memory_all_heads": lambda r: memory_ranking(r, None, signal),
        "rag+memory": lambda r: fused(r["rag"], memory_ranking(r, heads, signal), weights=[1, weight]),
        # what the pipeline does: the memory re-ranks the question's own top DEPTH, and only a memory read
        # at its own positions (no longer than MEMORAG_READ_SPAN) points
        "pipeline": lambda r: pooled(r, heads, signal) if r["fits_span"] else r["rag"],
    }
    if all("clues" in r for r in rows):
        strategies["clues"] = lambda r: r["clues"]
        strategies["clues+memory"] = lambda r: fused(r["clues"], memory_ranking(r, heads, signal), weights=[1, weight])
    base = [recall_at_k(set(r["gold"]), r["rag"], k) for r in rows]
    table = {}
    for name, rank in strategies.items():
        recalls = [recall_at_k(set(r["gold"]), rank(r), k) for r in rows]
        diff = np.array(recalls) - np.array(base)
        table[name] = {
            "set": rows[0]["set"], "strategy": name, "questions": len(rows),
            f"recall@{k}": float(np.mean(recalls)),
            f"hit@{k}": float(np.mean([hit_at_k(set(r["gold"]), rank(r), k) for r in rows])),
            "vs_rag": float(diff.mean()), "stderr": float(diff.std() / max(1.0, np.sqrt(len(diff)))),
        }  # fmt: skip
    rag_ms = 1000 * float(np.mean([r["rag_s"] for r in rows]))
    pointing_ms = 1000 * float(np.mean([r["pointing_s"] for r in rows]))
    table["rag"]["added_ms"] = 0.0
    for name in ("memory", "rag+memory", "pipeline"):
        table[name]["added_ms"] = pointing_ms
    clue_ms = 1000 * float(np.mean([r.get("clues_s", 0.0) for r in rows]))
    for name in ("clues", "clues+memory"):  # clues read from the cache cost nothing here: no figure then
        if name in table and clue_ms > 50:
            table[name]["added_ms"] = clue_ms + (pointing_ms if name == "clues+memory" else 0.0)
    table["rag"]["retrieval_ms"] = rag_ms
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="qmsum_val,natural_question", help="held-out sets to report")
    parser.add_argument("--meetings", type=int, default=8, help="QMSum meetings per split")
    parser.add_argument("--documents", type=int, default=10, help="L-Eval documents")
    parser.add_argument("--questions", type=int, default=6, help="most questions per document")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--clues", action="store_true", help="also write clues (slow; kept in --clue-cache)")
    parser.add_argument("--clue-cache", default=str(ROOT / "bench-out" / "clues-memory-evidence.json"))
    parser.add_argument(
        "--write-heads", action="store_true", help="keep the chosen heads for this model, if they beat rag on dev"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = get_settings()
    lm, embedder = load_model(settings=settings), get_embedder()
    server = BenchRedis(settings)
    clue_cache = ClueCache(args.clue_cache) if args.clues else None
    try:
        index = EmbeddedIndex(server.client)
        dev = gather("qmsum_train", lm, embedder, index, settings, args, None)
        heads, signal, grid = choose_heads(dev, lm.name, args.k)
        held = {s: gather(s, lm, embedder, index, settings, args, clue_cache) for s in args.sets.split(",") if s}
    finally:
        server.stop()
    rows = list(report(dev, heads, signal, args.k).values())
    for got in held.values():
        rows += list(report(got, heads, signal, args.k).values())
    columns = ["set", "strategy", "questions", f"recall@{args.k}", f"hit@{args.k}", "vs_rag", "stderr", "added_ms"]
    print(f"heads: {heads.pairs}; {heads.measured}")
    print_table(rows, columns, "evidence from the memory's attention (qmsum_train: the dev split heads were chosen on)")
    dev = {row["strategy"]: row[f"recall@{args.k}"] for row in rows if row["set"] == "qmsum_train"}
    if args.write_heads and dev["pipeline"] > dev["rag"]:  # kept only where they beat the question alone
        heads_file(lm.name).parent.mkdir(parents=True, exist_ok=True)
        heads_file(lm.name).write_text(heads.to_json() + "\n")
        print(f"kept the heads in {heads_file(lm.name)}")
    elif args.write_heads:
        print(f"heads not kept: on the dev split they re-rank to recall@{args.k} {dev['pipeline']:.3f}, "
              f"the question alone {dev['rag']:.3f}")  # fmt: skip
    write_json(args.json, {"rows": rows, "heads": asdict(heads), "signal": signal, "grid": grid,
                           "scorer": settings.scorer, "beta": settings.beta})  # fmt: skip


if __name__ == "__main__":
    main()
