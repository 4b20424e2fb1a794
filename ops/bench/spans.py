"""Which words of the shown sentence answer a typed question: each span signal alone and together.

Every question retrieves with the question alone (hybrid, k 5, as `ask` does with clues off), the reader
picks and shows its sentence, and for questions that ask for a short answer (a name, a date, a number,
an identifier, one of two options) every candidate span of the shown sentence is scored by each signal
of agent/spans.py. A choice is right when its span holds a gold answer; F1 is the token F1 the harness
reports (a question read without a span scores its sentence; a declined one scores 0).

Split: L-Eval natural_question documents 11-21 and the technical documents' dev half choose the weights;
documents 1-10 (the 50 questions `manage.py eval --limit 10 --questions 5` asks) and the technical
documents' test half report them. Prints tables, writes JSON.

    python ops/bench/spans.py --json bench-out/spans.json
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from common import DATA, ROOT, BenchRedis, print_table, write_json

from agent import reader, spans
from agent.evaluation import load_samples
from agent.metrics import answer_in, best_of, token_f1
from agent.models import load_model
from agent.pipeline import index_document
from agent.retrieval import get_embedder, retrieve
from core.settings import get_settings
from store.vectors import EmbeddedIndex


def gather(lm, embedder, index, kb: str, samples, split_of, questions: int, hybrid: bool) -> list[dict]:
    """Each question's reading and, where it asks for a span, every candidate with its signals."""
    texts = {s.doc_id: s.text for s in samples if s.text}
    rows = []
    for n, sample in enumerate(samples):
        if kb != "techdocs":  # one knowledge base per document, as the per-document harness asks
            index.drop(kb)
            index_document(lm, embedder, index, kb, sample.doc_id, sample.text)
        for q in sample.questions[:questions]:
            if not q.answers:
                continue
            evidence = retrieve(index, embedder, kb, q.text, k=5, hybrid=hybrid)
            ranked = reader.rank_sentences(q.text, reader.split_sentences(evidence, texts.__getitem__), embedder)
            row = {"q": q.text, "golds": list(q.answers), "split": split_of(n, q), "kind": spans.answer_type(q.text)}
            if not ranked.sentences or ranked.support[ranked.best()[0]] < reader.MIN_SUPPORT:
                rows.append({**row, "declined": True, "sentence": "", "options": [], "signals": {}})
                continue
            first, last = reader.extent(ranked.sentences, ranked.best()[0])
            shown = ranked.sentences[first : last + 1]
            options = spans.candidates(q.text, shown, row["kind"]) if row["kind"] else []
            found = spans.span_signals(lm, q.text, shown, options) if len(options) > 1 else {}
            rows.append(
                {
                    **row,
                    "declined": False,
                    "sentence": " ".join(s.text for s in shown),
                    "options": [span for span, _ in options],
                    "signals": {k: v.tolist() for k, v in found.items()},
                }
            )
        print(f"  {kb}: {n + 1}/{len(samples)} documents", flush=True)
    return rows


def prediction(row: dict, weights: spans.SpanWeights) -> str:
    """What the harness scores: the chosen span, else the sentence, else nothing (declined)."""
    if row["declined"]:
        return ""
    if not row["options"]:
        return row["sentence"]
    if len(row["options"]) == 1:
        return row["options"][0]
    found = {k: np.asarray(v) for k, v in row["signals"].items()}
    return row["options"][spans.choose(found, weights)]


def scores(rows: list[dict], weights: spans.SpanWeights) -> dict:
    chosen = [r for r in rows if len(r["options"]) > 1]
    return {
        "f1": float(np.mean([best_of(token_f1, prediction(r, weights), r["golds"]) for r in rows])) if rows else None,
        "span right": float(np.mean([answer_in(prediction(r, weights), r["golds"]) for r in chosen]))
        if chosen
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=5, help="questions per natural_question document")
    parser.add_argument("--retrieval", choices=["hybrid", "dense"], default="hybrid")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    settings = get_settings()
    server = BenchRedis(settings)
    started = time.perf_counter()
    hybrid = args.retrieval == "hybrid"
    try:
        lm, embedder = load_model(settings=settings), get_embedder(settings.embedder)
        index = EmbeddedIndex(server.client)
        nq = load_samples("leval", DATA / "leval" / "natural_question.jsonl")
        rows = gather(lm, embedder, index, "nq", nq, lambda n, q: "test" if n < 10 else "dev", args.questions, hybrid)
        tech = load_samples("kbqa", ROOT / "ops" / "bench" / "data" / "techdocs.json")
        for s in tech:
            if s.text:
                index_document(lm, embedder, index, "techdocs", s.doc_id, s.text, name=s.doc_id)
        rows += [
            {**r, "set": "techdocs"}
            for r in gather(lm, embedder, index, "techdocs", tech, lambda n, q: q.split, 10**6, hybrid)
        ]
    finally:
        server.stop()
    for r in rows:
        r.setdefault("set", "nq")

    alone = {name: spans.SpanWeights(**{s: float(s == name) for s in spans.SIGNALS}) for name in spans.SIGNALS}
    grid = [
        spans.SpanWeights(likelihood=a, fresh=b, near=c)
        for a, b, c in itertools.product([0.0, 0.5, 1.0, 2.0], [0.0, 0.5, 1.0, 2.0, 5.0], [0.0, 0.5, 1.0, 2.0])
        if a or b or c
    ]
    dev = [r for r in rows if r["split"] == "dev"]
    chosen = max(grid, key=lambda w: (scores(dev, w)["span right"] or 0, scores(dev, w)["f1"] or 0))
    variants = {
        "first candidate": spans.SpanWeights(likelihood=0.0, fresh=0.0, near=0.0),
        **{f"{name} alone": w for name, w in alone.items()},
        "default weights": spans.DEFAULT_SPAN_WEIGHTS,
        "best on dev: " + " ".join(f"{k} {v:g}" for k, v in chosen.as_dict().items()): chosen,
    }
    table = []
    for name, w in variants.items():
        entry = {"choice": name}
        for part in ("nq", "techdocs"):
            for split in ("dev", "test"):
                got = scores([r for r in rows if r["set"] == part and r["split"] == split], w)
                entry[f"{part} {split} right"] = got["span right"]
                entry[f"{part} {split} f1"] = got["f1"]
        table.append(entry)
    oracle = {"choice": "a candidate holds the answer (ceiling)"}
    for part in ("nq", "techdocs"):
        for split in ("dev", "test"):
            part_rows = [r for r in rows if r["set"] == part and r["split"] == split and len(r["options"]) > 1]
            oracle[f"{part} {split} right"] = (
                float(np.mean([max(answer_in(o, r["golds"]) for o in r["options"]) for r in part_rows]))
                if part_rows
                else None
            )
    table.append(oracle)
    parts = [(p, s) for p in ("nq", "techdocs") for s in ("dev", "test")]
    columns = ["choice", *(f"{p} {s} {m}" for p, s in parts for m in ("right", "f1"))]
    print_table(table, columns, "span choice: right = the span holds a gold answer (questions with 2+ candidates)")
    counts = {
        f"{p} {s}": sum(1 for r in rows if r["set"] == p and r["split"] == s and len(r["options"]) > 1)
        for p in ("nq", "techdocs")
        for s in ("dev", "test")
    }
    print("questions with 2+ candidates:", counts)
    write_json(
        args.json,
        {
            "date": time.strftime("%Y-%m-%d"),
            "model": lm.name,
            "retrieval": args.retrieval,
            "table": table,
            "counts": counts,
            "best_weights_on_dev": chosen.as_dict(),
            "rows": rows,
            "seconds": time.perf_counter() - started,
        },
    )


if __name__ == "__main__":
    main()
