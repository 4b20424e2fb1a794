"""Retrieval benchmark on QMSum: does retrieving with memory clues find more evidence?

Strategies, all on the same chunks, embedder and k, in one run:
``rag`` (question only, dense: standard RAG), ``memorag`` (question + memory
clues with the pipeline's fusion, ``agent.retrieval.DEFAULT_FUSION``),
``memorag_rrf`` (one RRF vote per clue, the question twice); two ceilings of span writing, ``spans_oracle`` (question +
the gold evidence text as the spans) and ``memorag_oracle_spans`` (the pipeline's
clues with the gold text in place of the model's spans), and the same two with
the spans joined into one clue (``memorag_spans_joined``, ``memorag_oracle_joined``);
with ``--fusions``, two rows per named fusion (the library's and ``fusions.py``'s):
the model's clues, and the same with the gold evidence as the spans (that
fusion's ceiling of span writing). Also the embedded index's search latency
against a bare numpy product.

    python ops/bench/retrieval.py --meetings 8 --json out.json

Fusions are chosen on the train split, so validation figures are not tuned on:

    python ops/bench/retrieval.py --data ../shared/data/qmsum/train.jsonl --meetings 8 --questions 4 \\
        --fusions all --sweep "" --sizes "" --clue-cache bench-out/clues-train.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import numpy as np
from common import DATA, BenchRedis, ClueCache, print_table, write_json
from fusions import ALL, EXPERIMENTS

from agent import programs
from agent.datasets import load_qmsum
from agent.metrics import covered_fraction, gold_chunk_ids, hit_at_k, recall_at_k
from agent.models import load_model
from agent.retrieval import chunk_document, get_embedder, retrieve
from agent.rlgf import Example, gold_spans
from core.settings import get_settings
from store.vectors import EmbeddedIndex

STRATEGIES = [
    "rag",
    "memorag",
    "memorag_rrf",
    "spans_oracle",
    "memorag_oracle_spans",
    "memorag_spans_joined",
    "memorag_oracle_joined",
]


def quality(args, lm, embedder, index) -> tuple[dict, int]:
    fusions = [f for f in (ALL if args.fusions == "all" else args.fusions.split(",")) if f]
    rows = [*STRATEGIES, *(f"fusion:{f}" for f in fusions), *(f"fusion:{f}:gold_spans" for f in fusions)]
    found: dict[str, list[tuple[float, float]]] = {s: [] for s in rows}
    cache = ClueCache(args.clue_cache)
    n = 0
    for sample in load_qmsum(args.data, limit=args.meetings):
        chunks = chunk_document(sample.doc_id, sample.text, lm.tokenizer, args.chunk_tokens, args.overlap)
        asked = [(q, gold_chunk_ids(chunks, q.evidence)) for q in sample.questions[: args.questions]]
        asked = [(q, gold) for q, gold in asked if gold]
        if not asked:
            continue
        written = cache.clues(lm, sample, [q for q, _ in asked], args.beta)
        kb = f"bench-{sample.doc_id}"
        index.drop(kb)
        index.upsert(kb, chunks, embedder.encode([c.text for c in chunks]))
        for q, gold in asked:
            written_clues = programs.Clues(**written[q.text])
            spans, hints = written_clues.spans, written_clues.hints()
            # Ceilings of span writing: the gold evidence quoted perfectly, alone and in place of the model's spans.
            quoted = gold_spans(sample.text, Example(sample.doc_id, q.text, "", tuple(q.evidence)))

            def ids(spans=(), hints=(), kb=kb, question=q.text, **options) -> list[str]:
                found = retrieve(index, embedder, kb, question, hints, spans=["\n".join(spans)], k=args.k, **options)
                return [e.chunk.id for e in found]

            def joined(lines: list[str]) -> list[str]:
                return [" ".join(lines)] if lines else []

            ranked = {
                "rag": ids(),
                "memorag": ids(spans, hints),  # the pipeline's fusion
                "memorag_rrf": ids(spans, hints, fusion=EXPERIMENTS["rrf"]),
                "spans_oracle": ids(quoted),
                "memorag_oracle_spans": ids(quoted, hints),
                "memorag_spans_joined": ids(joined(spans), hints),
                "memorag_oracle_joined": ids(joined(quoted), hints),
                **{f"fusion:{f}": ids(spans, hints, fusion=ALL[f]) for f in fusions},
                **{f"fusion:{f}:gold_spans": ids(quoted, hints, fusion=ALL[f]) for f in fusions},
            }
            for name, got in ranked.items():
                found[name].append((recall_at_k(gold, got, args.k), hit_at_k(gold, got, args.k)))
            n += 1
        index.drop(kb)
    k = args.k
    rag = np.array([r for r, _ in found["rag"]])
    table = {}
    for name, values in found.items():
        recalls = np.array([r for r, _ in values])
        table[name] = {
            f"recall@{k}": float(recalls.mean()),
            f"hit@{k}": float(np.mean([h for _, h in values])),
            "stderr": float(recalls.std() / max(1, np.sqrt(len(recalls)))),
            "vs_rag": float((recalls - rag).mean()),
            "wins": int((recalls > rag).sum()),
            "losses": int((recalls < rag).sum()),
        }
    return table, n


VARIANTS = {  # name: (chunks carry their context, hybrid search)
    "dense_bare": (False, False),
    "dense_context": (True, False),
    "hybrid_bare": (False, True),
    "hybrid_context": (True, True),
}


def representations(args, lm, embedder, index) -> tuple[dict, int]:
    """Question-only retrieval (rag) with chunks bare or carrying their context, searched dense or hybrid;
    with --rep-clues also the pipeline's clues (memorag), from the clue cache or written now."""
    rows = [*VARIANTS, *(f"memorag_{v}" for v in VARIANTS)] if args.rep_clues else list(VARIANTS)
    found: dict[str, list[float]] = {r: [] for r in rows}
    hits: dict[str, list[float]] = {r: [] for r in rows}
    cache = ClueCache(args.clue_cache) if args.rep_clues else None
    n = 0
    for sample in load_qmsum(args.data, limit=args.rep_meetings):
        with_context = chunk_document(
            sample.doc_id, sample.text, lm.tokenizer, args.chunk_tokens, args.overlap, name=sample.doc_id
        )
        bare = [replace(c, context="") for c in with_context]
        asked = [(q, gold_chunk_ids(bare, q.evidence)) for q in sample.questions[: args.questions]]
        asked = [(q, gold) for q, gold in asked if gold]
        if not asked:
            continue
        written = cache.clues(lm, sample, [q for q, _ in asked], args.beta) if cache else {}
        for label, chunks in (("bare", bare), ("context", with_context)):
            index.drop(f"rep-{label}")
            index.upsert(f"rep-{label}", chunks, embedder.encode([c.searchable for c in chunks]))
        for q, gold in asked:
            for name in rows:
                context, hybrid = VARIANTS[name.removeprefix("memorag_")]
                clues = programs.Clues(**written[q.text]) if name.startswith("memorag_") else None
                spans, hints = (["\n".join(clues.spans)], clues.hints()) if clues else ((), ())
                kb = f"rep-{'context' if context else 'bare'}"
                got = retrieve(index, embedder, kb, q.text, hints, spans=spans, k=args.k, hybrid=hybrid)
                ids = [e.chunk.id for e in got]
                found[name].append(recall_at_k(gold, ids, args.k))
                hits[name].append(hit_at_k(gold, ids, args.k))
            n += 1
    for label in ("bare", "context"):
        index.drop(f"rep-{label}")
    base = np.array(found["dense_bare"])
    table = {}
    for name in rows:
        recalls = np.array(found[name])
        table[name] = {
            f"recall@{args.k}": float(recalls.mean()),
            f"hit@{args.k}": float(np.mean(hits[name])),
            "stderr": float(recalls.std() / max(1, np.sqrt(len(recalls)))),
            "vs_dense_bare": float((recalls - base).mean()),
            "wins": int((recalls > base).sum()),
            "losses": int((recalls < base).sum()),
        }
    return table, n


def chunk_sweep(args, tokenizer, embedder, index, sizes: list[int]) -> list[dict]:
    """Question-only dense retrieval per chunk size, at one context budget (k x size tokens fixed)."""
    budget = args.k * args.chunk_tokens
    rows = []
    samples = list(load_qmsum(args.data, limit=args.sweep_meetings))
    for size in sizes:
        k = max(1, budget // size)
        recalls, n_chunks = [], 0
        for sample in samples:
            chunks = chunk_document(sample.doc_id, sample.text, tokenizer, size, size // 8)
            n_chunks += len(chunks)
            kb = f"sweep-{sample.doc_id}"
            index.drop(kb)
            index.upsert(kb, chunks, embedder.encode([c.text for c in chunks]))
            for q in sample.questions:
                if q.evidence:
                    found = [(e.chunk.char_start, e.chunk.char_end) for e in retrieve(index, embedder, kb, q.text, k=k)]
                    recalls.append(covered_fraction(q.evidence, found))
            index.drop(kb)
        rows.append(
            {
                "chunk_tokens": size,
                "k": k,
                "chunks": n_chunks,
                "gold_chars_covered": float(np.mean(recalls)),
                "queries": len(recalls),
            }
        )
        print(f"chunk {size}: {rows[-1]}", flush=True)
    return rows


def latency(index, sizes: list[int], dim: int = 384, budget_s: float = 3.0) -> list[dict]:
    """Median of interleaved single searches and bare numpy products on the same matrix."""
    from store.vectors import Chunk

    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        kb = f"latency-{size}"
        index.drop(kb)
        matrix = rng.standard_normal((size, dim), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        for start in range(0, size, 20000):
            part = range(start, min(size, start + 20000))
            index.upsert(kb, [Chunk("d", i, "", 0, 0, 0, 0) for i in part], matrix[start : part.stop])
        query = matrix[:1] + 0.01
        index.search(kb, query, 5)  # warm the per-process cache
        search, bare = [], []
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline or len(search) < 20:
            started = time.perf_counter()
            index.search(kb, query, 5)
            search.append(time.perf_counter() - started)
            started = time.perf_counter()
            scores = query @ matrix.T
            np.argpartition(-scores[0], 4)[:5]
            bare.append(time.perf_counter() - started)
        search_s, bare_s = float(np.median(search)), float(np.median(bare))
        rows.append(
            {
                "vectors": size,
                "search_ms": search_s * 1e3,
                "numpy_ms": bare_s * 1e3,
                "ratio": search_s / bare_s,
                "samples": len(search),
            }
        )
        index.drop(kb)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA / "qmsum" / "val.jsonl"))
    parser.add_argument("--meetings", type=int, default=8)
    parser.add_argument("--questions", type=int, default=20, help="most questions per meeting")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--beta", type=int, default=16)
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="index sizes for the latency test")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--sweep", default="128,256,512", help="chunk sizes for the question-only sweep")
    parser.add_argument("--sweep-meetings", type=int, default=35)
    parser.add_argument("--fusions", default="", help="also rank with these fusions (comma-separated, or 'all')")
    parser.add_argument("--clue-cache", default=None, help="JSON file keeping written clues between runs")
    parser.add_argument(
        "--representations", action="store_true", help="chunks bare or with context, searched dense or hybrid"
    )
    parser.add_argument("--rep-meetings", type=int, default=35)
    parser.add_argument("--rep-clues", action="store_true", help="also with the memory's clues (memorag)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    settings = get_settings()
    server = BenchRedis(settings)
    index = EmbeddedIndex(server.client)
    payload: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "k": args.k,
        "beta": args.beta,
        "chunk_tokens": args.chunk_tokens,
        "overlap": args.overlap,
    }
    try:
        if not args.skip_quality:
            lm, embedder = load_model(settings=settings), get_embedder()
            table, n = quality(args, lm, embedder, index)
            payload.update({"strategies": table, "n_queries": n, "meetings": args.meetings, "model": lm.name})
            print_table(
                [{"strategy": s, **v} for s, v in table.items()],
                ["strategy", f"recall@{args.k}", f"hit@{args.k}", "stderr", "vs_rag", "wins", "losses"],
                f"QMSum {Path(args.data).stem}, {n} queries",
            )
        if args.representations:
            lm, embedder = load_model(settings=settings), get_embedder()
            table, n = representations(args, lm, embedder, index)
            payload["representations"] = {"variants": table, "n_queries": n, "meetings": args.rep_meetings}
            print_table(
                [{"variant": s, **v} for s, v in table.items()],
                ["variant", f"recall@{args.k}", f"hit@{args.k}", "stderr", "vs_dense_bare", "wins", "losses"],
                f"QMSum {Path(args.data).stem}: chunk context x hybrid search, {n} queries",
            )
        if args.sweep:
            lm, embedder = load_model(settings=settings), get_embedder()
            sweep = chunk_sweep(args, lm.tokenizer, embedder, index, [int(x) for x in args.sweep.split(",") if x])
            payload["chunk_sweep"] = sweep
            print_table(
                sweep,
                ["chunk_tokens", "k", "chunks", "gold_chars_covered", "queries"],
                f"question-only dense retrieval by chunk size, {args.k * args.chunk_tokens}-token budget",
            )
        sizes = [int(s) for s in args.sizes.split(",") if s]
        if sizes:
            payload["latency"] = rows = latency(index, sizes)
            print_table(rows, ["vectors", "search_ms", "numpy_ms", "ratio"], "embedded search vs bare numpy")
    finally:
        server.stop()
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
