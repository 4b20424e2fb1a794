"""Routing and search as a knowledge base grows to 1M tokens, without forming memories.

The scale bench's corpus (``scale.corpus``: real text cut into 3,000-token
sections, the first sections one QMSum meeting) is chunked and embedded here
and indexed into one knowledge base in steps; at each size (10k / 100k / 1M
tokens):

- routing accuracy: questions from every source document already in the knowledge base (QMSum meetings,
  L-Eval documents, LongBench items), routed by ``route_documents`` to ``MEMORAG_ROUTE_DOCS``
  sections; right when one of them is a section of the question's document;
- latency of what a question costs before the memories are read (route + retrieve, question only, the
  hybrid search and dense alone) for the first meeting's questions, the same ones at every size; and the
  first search after an ingestion (it builds BM25);
- the embedded index's bytes in Redis per token.

The full scale bench (ingestion through workers, memories, tiers) is ``scale.py``; this one takes minutes::

    python ops/bench/routing_scale.py --json bench-out/routing-scale.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import common  # noqa: F401  (puts the project on sys.path)
from common import BenchRedis, print_table, write_json
from scale import KB, corpus, index_bytes, segments, timed_questions

from agent.models import load_model
from agent.pipeline import route_documents
from agent.retrieval import chunk_document, get_embedder, retrieve
from core.settings import get_settings
from store.vectors import EmbeddedIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--checkpoints", default="10000,100000,1000000")
    parser.add_argument("--section", type=int, default=3000)
    parser.add_argument("--questions", type=int, default=6, help="timed questions (the first meeting's)")
    parser.add_argument("--routed", type=int, default=60, help="most questions whose routing is judged per size")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = get_settings()
    route = settings.route_docs
    lm, embedder = load_model(settings=settings), get_embedder()
    docs = corpus(lm.tokenizer, args.tokens, args.section)
    timed = timed_questions(docs, args.questions)
    source = {d.name: id(d.questions) for d in docs}  # a document's sections share its list of questions
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    server = BenchRedis(settings)
    rows = []
    try:
        index = EmbeddedIndex(server.client)
        index.drop(KB)
        present: list = []
        for count, segment in segments(docs, checkpoints):
            chunks = [c for d in segment for c in chunk_document(d.name, d.text, lm.tokenizer, name=d.name)]
            started = time.perf_counter()
            index.upsert(KB, chunks, embedder.encode([c.searchable for c in chunks]))
            indexed_s = time.perf_counter() - started
            print(f"{count:,} tokens: {len(chunks)} chunks indexed in {indexed_s:.0f} s", flush=True)
            present += segment
            names = [d.name for d in present]
            asked = {(source[d.name], q) for d in present for q in d.questions[:2]}
            judged = random.Random(count).sample(sorted(asked, key=str), min(args.routed, len(asked)))
            for mode in ("hybrid", "dense"):
                hybrid = mode == "hybrid"
                started = time.perf_counter()
                index.search(KB, embedder.encode(["warm up"]), 1, texts=["warm up"] if hybrid else None)
                build_s = time.perf_counter() - started
                took = []
                for q in timed:
                    started = time.perf_counter()
                    route_documents(index, embedder, KB, q, names, limit=route, hybrid=hybrid)
                    retrieve(index, embedder, KB, q, k=settings.top_k, hybrid=hybrid)
                    took.append(time.perf_counter() - started)
                right = []
                for src, q in judged:
                    chosen = route_documents(index, embedder, KB, q, names, limit=route, hybrid=hybrid)
                    right.append(any(source[n] == src for n in chosen))
                rows.append({
                    "tokens": count, "search": mode, "documents": len(present), "chunks": index.count(KB),
                    "routing_questions": len(judged), f"routed@{route}": sum(right) / max(1, len(right)),
                    "p50_ms": 1000 * statistics.median(took), "first_search_s": build_s,
                    "index_bytes_per_token": index_bytes(server.client) / count,
                })  # fmt: skip
                print(rows[-1], flush=True)
    finally:
        server.stop()
    first = {row["search"]: row["p50_ms"] for row in reversed(rows)}  # each search at the smallest size
    for row in rows:
        row["p50_vs_first"] = row["p50_ms"] / first[row["search"]]
    columns = ["tokens", "search", "documents", "chunks", "routing_questions", f"routed@{route}", "p50_ms"]
    title = "routing and search by knowledge-base size (question only)"
    print_table(rows, [*columns, "p50_vs_first", "first_search_s", "index_bytes_per_token"], title)
    write_json(args.json, {"rows": rows, "route_docs": route})


if __name__ == "__main__":
    main()
