"""Knowledge-base retrieval: every document of a set in one knowledge base, every question asked of all of it.

What ``ask`` does before it reads, measured without the reader: routing (the
answering document among the ``MEMORAG_ROUTE_DOCS`` routed ones, by the same
``route_documents``) and the evidence (``retrieve`` with the question, k=5, over
the whole knowledge base: the gold answer among the five chunks, and the share of
its words there for long answers). Chunks bare (the passage
alone: before chunks carried their context) or with their title and headings,
searched dense (the embedding alone) or hybrid (BM25 beside it), all four in one
run; ``hybrid_context`` is the default. Sets: L-Eval multidoc_qa and natural_question
(each line one document) and the technical documents (``--format kbqa``)::

    python ops/bench/kb_retrieval.py --json bench-out/kb-retrieval.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import numpy as np
from common import DATA, BenchRedis, print_table, write_json

from agent.evaluation import load_samples
from agent.metrics import answer_in, answer_recall
from agent.models import load_model
from agent.pipeline import route_documents
from agent.retrieval import chunk_document, get_embedder, retrieve
from core.settings import get_settings
from store.vectors import EmbeddedIndex

ROOT = Path(__file__).resolve().parents[2]
# L-Eval's documents have no names (a made-up one would title every chunk): their own headings title them.
SETS = {  # format, file, the document's id is its name
    "multidoc_qa": ("leval", DATA / "leval" / "multidoc_qa.jsonl", False),
    "natural_question": ("leval", DATA / "leval" / "natural_question.jsonl", False),
    "techdocs": ("kbqa", ROOT / "ops" / "bench" / "data" / "techdocs.json", True),
}
VARIANTS = {  # (context, hybrid)
    "dense_bare": (False, False),
    "dense_context": (True, False),
    "hybrid_bare": (False, True),
    "hybrid_context": (True, True),
}


def measure(name: str, spec: tuple, lm, embedder, index, k: int, route: int, split: str | None) -> dict:
    fmt, path, named = spec
    samples = load_samples(fmt, path)
    documents = [s for s in samples if s.text]
    asked = [(q, s.doc_id) for s in documents for q in s.questions if split is None or q.split in ("", split)]
    chunked = {
        s.doc_id: chunk_document(s.doc_id, s.text, lm.tokenizer, name=s.doc_id if named else "") for s in documents
    }
    for context in (False, True):  # one index per way of storing chunks, searched both ways
        chunks = [c if context else replace(c, context="") for cut in chunked.values() for c in cut]
        index.drop(f"kb-{context}")
        index.upsert(f"kb-{context}", chunks, embedder.encode([c.searchable for c in chunks]))
    doc_ids = [s.doc_id for s in documents]
    table = {}
    for variant, (context, hybrid) in VARIANTS.items():
        kb, routed, hits, words, took = f"kb-{context}", [], [], [], []
        for question, doc in asked:
            started = time.perf_counter()
            chosen = route_documents(index, embedder, kb, question.text, doc_ids, limit=route, hybrid=hybrid)
            evidence = retrieve(index, embedder, kb, question.text, k=k, hybrid=hybrid)
            took.append(time.perf_counter() - started)
            given = "\n".join(e.chunk.text for e in evidence)
            routed.append(float(doc in chosen))
            hits.append(answer_in(given, question.answers))
            words.append(max(answer_recall(given, a) for a in question.answers))
        table[variant] = {
            "set": name, "variant": variant, "questions": len(asked), "documents": len(documents),
            "chunks": sum(len(c) for c in chunked.values()), f"routed@{route}": float(np.mean(routed)),
            f"answer@{k}": float(np.mean(hits)), f"answer_words@{k}": float(np.mean(words)),
            "latency_ms": 1000 * float(np.mean(took)),
        }  # fmt: skip
    for context in (False, True):
        index.drop(f"kb-{context}")
    base = table["dense_bare"]
    for row in table.values():
        row["routed_vs_dense"] = row[f"routed@{route}"] - base[f"routed@{route}"]
        row["answer_vs_dense"] = row[f"answer@{k}"] - base[f"answer@{k}"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated, of: " + ", ".join(SETS))
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--split", choices=["dev", "test"], default=None, help="kbqa sets: only this split")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = get_settings()
    lm, embedder = load_model(settings=settings), get_embedder()
    server = BenchRedis(settings)
    rows = []
    try:
        index = EmbeddedIndex(server.client)
        for name in [s for s in args.sets.split(",") if s]:
            table = measure(name, SETS[name], lm, embedder, index, args.k, settings.route_docs, args.split)
            rows += list(table.values())
    finally:
        server.stop()
    k, route = args.k, settings.route_docs
    columns = ["set", "variant", "questions", "documents", f"routed@{route}", f"answer@{k}", f"answer_words@{k}"]
    print_table(rows, [*columns, "routed_vs_dense", "answer_vs_dense", "latency_ms"], "knowledge-base retrieval (rag)")
    write_json(args.json, {"rows": rows, "k": k, "route_docs": route, "split": args.split})


if __name__ == "__main__":
    main()
