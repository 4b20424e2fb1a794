"""Sentence ranking and declines on a knowledge-base set: each signal alone and together, thresholds.

All documents of the set go into one knowledge base; every question
(answerable and off-topic) retrieves its top-k passages with the question
alone, as `ask` does. Over those sentences each ranking signal of
agent/ranking.py ranks alone, then the combination (with and without the
headings above each sentence, with the model's likelihood as a tie-break).
A ranking is right when the sentence it puts first (with its neighbour when
cut) holds a gold answer. The decline threshold on the best sentence's
support is chosen on the dev split (the lowest that declines >= 95% of
off-topic questions) and reported on the test split. Prints tables, writes JSON.

    python ops/bench/sentences.py --json bench-out/sentences.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
from common import ROOT, BenchRedis, print_table, write_json

from agent import ranking, reader
from agent.chat import chat_prompt, end_of_turn_ids
from agent.evaluation import load_samples
from agent.memory.decoding import score_continuations
from agent.metrics import answer_in
from agent.models import load_model
from agent.retrieval import chunk_document, get_embedder, retrieve
from core.settings import get_settings
from store.vectors import EmbeddedIndex

KB = "_bench-sentences"


def gather(args, lm, embedder, index) -> list[dict]:
    """Each question's sentences and their signals, with which sentences hold a gold answer.

    ``kbqa``: all documents in one knowledge base; other formats (L-Eval): each question over its own
    document, as ``manage.py eval`` asks it, with alternate documents in the dev and test splits."""
    one_kb = args.format == "kbqa"
    samples = load_samples(args.format, args.data, limit=args.limit)
    texts = {s.doc_id: s.text for s in samples if s.text}
    kbs = {doc: KB if one_kb else f"{KB}-{n}" for n, doc in enumerate(texts)}
    for kb in set(kbs.values()):
        index.drop(kb)
    for doc, text in texts.items():
        chunks = chunk_document(doc, text, lm.tokenizer)
        index.upsert(kbs[doc], chunks, embedder.encode([c.text for c in chunks]))
    rows = []
    for n, sample in enumerate(samples):
        for q in sample.questions[: args.questions]:
            if not one_kb:
                q = dataclasses.replace(q, split="dev" if n % 2 == 0 else "test")
            evidence = retrieve(index, embedder, KB if one_kb else kbs[sample.doc_id], q.text, k=args.k)
            sentences = reader.split_sentences(evidence, texts.__getitem__)
            shown = [_shown(sentences, i) for i in range(len(sentences))]
            rows.append(
                {
                    "q": q,
                    "sentences": sentences,
                    "holds": np.asarray([answer_in(t, q.answers) if q.answers else 0.0 for t in shown]),
                    "with": reader.signals(q.text, sentences, embedder, context=True),
                    "without": reader.signals(q.text, sentences, embedder, context=False),
                    "in_evidence": answer_in("\n".join(e.chunk.text for e in evidence), q.answers),
                }
            )
    for kb in set(kbs.values()):
        index.drop(kb)
    return rows


def _shown(sentences, i: int) -> str:
    first, last = reader.extent(sentences, i)
    return " ".join(s.text for s in sentences[first : last + 1])


def best(row: dict, weights: ranking.Weights, context: bool = True) -> int:
    score = ranking.combine(row["with" if context else "without"], weights)
    return int(np.argmax(score)) if len(score) else -1


def right_rate(rows: list[dict], weights: ranking.Weights, context: bool = True) -> float:
    answerable = [r for r in rows if r["q"].answers]
    return float(np.mean([r["holds"][best(r, weights, context)] if r["sentences"] else 0.0 for r in answerable]))


def likelihood_pick(lm, row: dict, weights: ranking.Weights, margin: float, top: int = 3) -> int:
    """The combined ranking's best, unless another of the top few within ``margin`` is likelier as the reply
    (pointwise: log p(sentence | question) - log p(sentence))."""
    score = ranking.combine(row["with"], weights)
    order = list(np.argsort(-score)[:top])
    near = [i for i in order if score[order[0]] - score[i] <= margin]
    if len(near) < 2:
        return int(order[0])
    end = end_of_turn_ids(lm.tokenizer)
    ids = [lm.tokenizer(row["sentences"][i].text, add_special_tokens=False)["input_ids"][:64] + end for i in near]
    asked = score_continuations(lm, None, chat_prompt(lm.tokenizer, row["q"].text), ids)
    plain = score_continuations(lm, None, chat_prompt(lm.tokenizer, "Say something."), ids)
    value = [sum(a) / len(a) - sum(p) / len(p) for a, p in zip(asked, plain, strict=True)]
    return int(near[int(np.argmax(value))])


def supports(rows: list[dict], weights: ranking.Weights, mix: float) -> list[tuple[float, bool, float]]:
    """(support of the best sentence, answerable, right) per question."""
    out = []
    for r in rows:
        if not r["sentences"]:
            out.append((0.0, bool(r["q"].answers), 0.0))
            continue
        i = best(r, weights)
        s = ranking.support(float(r["with"]["dense"][i]), float(r["with"]["coverage"][i]), mix)
        out.append((s, bool(r["q"].answers), float(r["holds"][i])))
    return out


def decline_rates(points, threshold: float) -> dict:
    answerable = [p for p in points if p[1]]
    off = [p for p in points if not p[1]]
    shown_right = [p[2] for p in answerable if p[0] >= threshold]
    return {
        "threshold": threshold,
        "right": float(np.sum(shown_right) / max(1, len(answerable))),
        "answerable_declined": float(np.mean([p[0] < threshold for p in answerable])) if answerable else None,
        "offtopic_declined": float(np.mean([p[0] < threshold for p in off])) if off else None,
        "wrong_shown": float(
            (sum(1 - p[2] for p in answerable if p[0] >= threshold) + sum(p[0] >= threshold for p in off))
            / max(1, len(points))
        ),
    }


def _parse_weights(text: str) -> ranking.Weights:
    pairs = (part.split("=") for part in text.split(","))
    return ranking.Weights(**{name.strip(): float(value) for name, value in pairs})


def _weights(w: ranking.Weights) -> str:
    return " ".join(f"{name} {value:g}" for name, value in w.as_dict().items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "ops" / "bench" / "data" / "techdocs.json"))
    parser.add_argument("--format", default="kbqa", help="kbqa (one knowledge base) or an eval format (leval)")
    parser.add_argument("--limit", type=int, default=None, help="most documents")
    parser.add_argument("--questions", type=int, default=None, help="most questions per document")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--likelihood", action="store_true", help="also measure the model's likelihood tie-break")
    parser.add_argument(
        "--try",
        dest="tries",
        action="append",
        default=[],
        metavar="SIGNAL=W,...",
        help="also rank with these weights (e.g. lexical=0.15,dense=1,coverage=0.25,typed=0.1)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    settings = get_settings()
    server = BenchRedis(settings)
    started = time.perf_counter()
    try:
        lm, embedder = load_model(settings=settings), get_embedder(settings.embedder)
        rows = gather(args, lm, embedder, EmbeddedIndex(server.client))
    finally:
        server.stop()
    dev = [r for r in rows if r["q"].split == "dev"]
    test = [r for r in rows if r["q"].split == "test"]
    payload: dict = {"date": time.strftime("%Y-%m-%d"), "data": args.data, "k": args.k, "model": lm.name}

    alone = {name: ranking.Weights(**{s: float(s == name) for s in ranking.SIGNALS}) for name in ranking.SIGNALS}
    grid = [
        ranking.Weights(lexical=a, dense=1.0, coverage=c, rank=r, typed=t)
        for a, c, r, t in itertools.product(
            [0.0, 0.15, 0.3, 0.6], [0.0, 0.25, 0.5, 1.0], [0.0, 0.1, 0.3], [0.0, 0.1, 0.2, 0.4]
        )
    ]
    chosen = max(grid, key=lambda w: (right_rate(dev, w), -w.rank))
    variants = {
        **{f"{name} alone": (w, True) for name, w in alone.items()},
        "combined (default weights)": (ranking.DEFAULT_WEIGHTS, True),
        "combined, no headings": (ranking.DEFAULT_WEIGHTS, False),
        f"combined (best on dev: {_weights(chosen)})": (chosen, True),
        **{f"combined ({_weights(w)})": (w, True) for w in map(_parse_weights, args.tries)},
    }
    table = []
    for name, (w, context) in variants.items():
        table.append({"ranking": name, "dev": right_rate(dev, w, context), "test": right_rate(test, w, context)})
    ceiling = {
        split: float(np.mean([r["in_evidence"] for r in part if r["q"].answers]))
        for split, part in (("dev", dev), ("test", test))
    }
    table.append({"ranking": "answer in the retrieved passages (ceiling)", **ceiling})
    if args.likelihood:
        for margin in (0.05, 0.15):
            picks = {
                split: float(
                    np.mean(
                        [
                            r["holds"][likelihood_pick(lm, r, ranking.DEFAULT_WEIGHTS, margin)]
                            for r in part
                            if r["q"].answers and r["sentences"]
                        ]
                    )
                )
                for split, part in (("dev", dev), ("test", test))
            }
            table.append({"ranking": f"combined + likelihood tie-break (margin {margin})", **picks})
    print_table(table, ["ranking", "dev", "test"], f"best sentence holds the answer ({Path(args.data).name})")
    payload["rankings"] = table
    payload["best_weights_on_dev"] = chosen.as_dict()

    sweeps = []
    for mix in (0.25, 0.5, 0.75):
        points_dev = supports(dev, ranking.DEFAULT_WEIGHTS, mix)
        points_test = supports(test, ranking.DEFAULT_WEIGHTS, mix)
        candidates = [decline_rates(points_dev, t) for t in np.arange(0.1, 0.8, 0.01)]
        enough = [c for c in candidates if (c["offtopic_declined"] or 0) >= 0.95] or candidates[-1:]
        pick = min(enough, key=lambda c: c["threshold"])
        held_out = decline_rates(points_test, pick["threshold"])
        sweeps.append(
            {
                "mix": mix,
                "threshold": round(pick["threshold"], 2),
                **{f"dev {k}": v for k, v in pick.items() if k != "threshold"},
                **{f"test {k}": v for k, v in held_out.items() if k != "threshold"},
            }
        )
    columns = ["mix", "threshold", *(f"{s} {m}" for s in ("dev", "test") for m in ("right", "answerable_declined",
               "offtopic_declined", "wrong_shown"))]  # fmt: skip
    print_table(sweeps, columns, "declines: the lowest support threshold declining >= 95% of dev's off-topic questions")
    payload["declines"] = sweeps
    payload["seconds"] = time.perf_counter() - started
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
