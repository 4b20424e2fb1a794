"""The long-answer decline threshold: chosen on QMSum train by ROUGE-L, reported on val against the generator.

Every question is answered once with the threshold off (rag, the grounded
reader), keeping each answer's support; a threshold then declines the
answers below it, so every threshold is read off the same run (a declined
answer scores 0). The threshold with the best mean ROUGE-L on train is
reported on val beside the unchecked generator (the baseline, same
retrieval, same run) and the factoid threshold the reader used before.

    python ops/bench/long_answers.py --json bench-out/long-answers.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import DATA, BenchRedis, print_table, write_json

from agent import reader
from agent.evaluation import ANSWER_TOKENS, EvalConfig, Harness, Outcome, load_samples
from agent.models import load_model
from agent.retrieval import get_embedder
from core.settings import get_settings
from store.indexes import open_index
from store.memories import MemoryStore

THRESHOLDS = (0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.43, 0.46)


def answered(harness: Harness, path, limit: int, readers: tuple[str, ...]) -> list[Outcome]:
    harness.config = EvalConfig(
        modes=("rag",), k=harness.config.k, beta=harness.config.beta, questions=harness.config.questions,
        answer_tokens=ANSWER_TOKENS["qmsum"], short_answers=False, readers=readers,
    )  # fmt: skip
    return harness.evaluate(path.stem, load_samples("qmsum", path, limit)).outcomes


def at(outcomes: list[Outcome], threshold: float) -> dict:
    """Mean ROUGE-L / answer recall / unsupported shown when answers below ``threshold`` are declined."""
    rows = [o for o in outcomes if o.reader != "none"]
    kept = [o.support is not None and o.support >= threshold and o.shown for o in rows]
    return {
        "threshold": threshold,
        "rougeL": statistics.fmean(o.rougeL * k for o, k in zip(rows, kept, strict=True)),
        "answer_recall": statistics.fmean(o.answer_recall * k for o, k in zip(rows, kept, strict=True)),
        "shown": statistics.fmean(kept),
        "unsupported_shown": statistics.fmean(
            (o.unsupported_shown or 0.0) * k for o, k in zip(rows, kept, strict=True)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=str(DATA / "qmsum" / "train.jsonl"))
    parser.add_argument("--val", default=str(DATA / "qmsum" / "val.jsonl"))
    parser.add_argument("--meetings", type=int, default=10)
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    began = time.monotonic()

    settings = get_settings()
    server = BenchRedis(settings)
    try:
        lm, embedder = load_model(settings=settings), get_embedder(settings.embedder)
        config = EvalConfig(k=args.k, beta=settings.beta, questions=args.questions)
        harness = Harness(
            lm, embedder, open_index(server.client, settings), MemoryStore(server.client), config, settings
        )
        reader.MIN_SUPPORT_LONG = 0.0  # every answer shown; the thresholds are applied below
        train = answered(harness, Path(args.train), args.meetings, ("auto",))
        print(f"train: {len(train)} answers ({time.monotonic() - began:.0f} s)", flush=True)
        val = answered(harness, Path(args.val), args.meetings, ("none", "auto"))
        print(f"val: {len(val)} answers ({time.monotonic() - began:.0f} s)", flush=True)
    finally:
        server.stop()
    long_train = [o for o in train if o.path == "sentences"]
    sweep = [at(long_train, t) for t in THRESHOLDS]
    chosen = max(sweep, key=lambda r: (r["rougeL"], r["threshold"]))["threshold"]
    print_table(sweep, ["threshold", "rougeL", "answer_recall", "shown", "unsupported_shown"],
                f"train: long answers ({len(long_train)} of {len(train)} questions) by threshold")  # fmt: skip
    generator = [o for o in val if o.reader == "none"]
    baseline = {
        "reader": "generator, unchecked (baseline)",
        "rougeL": statistics.fmean(o.rougeL for o in generator),
        "answer_recall": statistics.fmean(o.answer_recall for o in generator),
        "shown": statistics.fmean(o.shown for o in generator),
        "unsupported_shown": statistics.fmean(o.unsupported_shown or 0.0 for o in generator),
    }
    rows = [baseline]
    for label, threshold in (("reader, factoid threshold", reader.MIN_SUPPORT), ("reader, chosen on train", chosen)):
        row = at(val, threshold) | {"reader": f"{label} ({threshold:g})"}
        row["rougeL_vs_generator"] = row["rougeL"] / baseline["rougeL"] if baseline["rougeL"] else None
        rows.append(row)
    print_table(rows, ["reader", "rougeL", "rougeL_vs_generator", "answer_recall", "shown", "unsupported_shown"],
                f"val: {len(generator)} questions, rag, k {args.k}")  # fmt: skip
    write_json(args.json, {"train": sweep, "chosen": chosen, "val": rows, "seconds": time.monotonic() - began})


if __name__ == "__main__":
    main()
