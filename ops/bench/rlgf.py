"""RLGF benchmark: does the feedback-trained clue writer retrieve more gold evidence than standard RAG?

Trains on QMSum train (the first ``--train-meetings`` meetings, at most
``--train-questions`` queries each, feedback = gold answers and evidence spans)
and evaluates on QMSum val, all in one run on the same memories, chunker,
embedder and k:

    rag           question only (standard RAG)
    memorag_base  question + clues, the base model writes the spans
    memorag_sft   spans from an adapter trained on gold evidence text (warm start)
    memorag_dpo   spans from an adapter trained by DPO on preference pairs only
    memorag_rlgf  warm start, then DPO on the same pairs
    spans_oracle  question + the gold evidence text as the spans (what a perfect
                  span writer would retrieve; a ceiling, not a strategy)

Pairs come from K sampled span sets per training query, scored by the
generator's log-likelihood of the gold answer given what each retrieved, plus
evidence recall@k.

    python ops/bench/rlgf.py --train-meetings 6 --val-meetings 10 --json bench-out/rlgf.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import common  # noqa: F401  (puts the project on sys.path)
from common import DATA, print_table, write_json

from agent import adapters, rlgf
from agent.datasets import load_qmsum
from agent.evaluation import EvalConfig, Harness, Report
from agent.metrics import gold_chunk_ids, hit_at_k, recall_at_k
from agent.models import load_model
from agent.retrieval import ADAPTER_FUSION, DEFAULT_FUSION, FUSIONS, get_embedder
from core.settings import get_settings
from store.indexes import open_index
from store.memories import MemoryStore
from store.redis import connect


def examples_of(samples, per_doc: int) -> list[rlgf.Example]:
    return [
        rlgf.Example(s.doc_id, q.text, q.answers[0], tuple(q.evidence))
        for s in samples
        for q in [q for q in s.questions if q.evidence][:per_doc]
    ]


def fixed_span_metrics(corpus: rlgf.Documents, examples, spans_of=lambda example: []) -> dict:
    """Recall@k and hit@k when each query's spans are given rather than written (none: standard RAG)."""
    recalls, hits = [], []
    for ex in examples:
        ids = [e.chunk.id for e in rlgf.retrieve_with(corpus, ex, spans_of(ex))]
        gold = gold_chunk_ids(corpus.chunks(ex.doc_id), list(ex.evidence))
        recalls.append(recall_at_k(gold, ids, corpus.k))
        hits.append(hit_at_k(gold, ids, corpus.k))
    return {f"recall@{corpus.k}": sum(recalls) / len(recalls), f"hit@{corpus.k}": sum(hits) / len(hits)}


def main() -> None:
    # Long on purpose: one experiment read top to bottom (arguments, corpus, rows in the order printed).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=str(DATA / "qmsum" / "train.jsonl"))
    parser.add_argument("--val", default=str(DATA / "qmsum" / "val.jsonl"))
    parser.add_argument("--train-meetings", type=int, default=6)
    parser.add_argument("--train-questions", type=int, default=4, help="most queries per training meeting")
    parser.add_argument("--val-meetings", type=int, default=10)
    parser.add_argument("--val-questions", type=int, default=2, help="most queries per validation meeting")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--beta", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument(
        "--temperature", type=float, default=rlgf.SAMPLE_TEMPERATURE, help="sampling temperature of candidate clue sets"
    )
    parser.add_argument(
        "--fusion",
        default=ADAPTER_FUSION,
        choices=sorted(FUSIONS),
        help="fusion every row retrieves with (default: the one trained adapters are gated and "
        f"queried with; the base model's queries use {DEFAULT_FUSION})",
    )
    parser.add_argument(
        "--pair-fusion",
        default=None,
        choices=sorted(FUSIONS),
        help="fusion that scores sampled clue sets for preference pairs (default: --fusion); "
        "'rrf' gives each span its own vote, so candidates differ more",
    )
    parser.add_argument("--loglik-weight", type=float, default=0.2)
    parser.add_argument("--pref-minutes", type=float, default=10.0, help="time budget for sampling and scoring")
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--dpo-steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    began = time.monotonic()

    settings = get_settings()
    lm, embedder = load_model(settings=settings), get_embedder(settings.embedder)
    client = connect(settings=settings)
    config = EvalConfig(k=args.k, beta=args.beta)
    harness = Harness(lm, embedder, open_index(client, settings), MemoryStore(client), config, settings)
    corpus = rlgf.Documents(lm, embedder, harness.index, args.k, fusion=args.fusion)
    train_samples = [replace(s, doc_id=f"train-{s.doc_id}") for s in load_qmsum(args.train, limit=args.train_meetings)]
    val_samples = [replace(s, doc_id=f"val-{s.doc_id}") for s in load_qmsum(args.val, limit=args.val_meetings)]
    memory_report = Report("rlgf", config, lm.name)
    texts = {}
    for sample in train_samples + val_samples:
        kb, chunks = harness.index_document(sample)
        corpus.add(sample.doc_id, kb, harness.memory_for(sample, memory_report), chunks)
        texts[sample.doc_id] = sample.text
        print(f"{sample.doc_id}: {len(chunks)} chunks, memory ready ({memory_report.memory})", flush=True)
    train = examples_of(train_samples, args.train_questions)
    val = examples_of(val_samples, args.val_questions)
    print(f"{len(train)} training queries, {len(val)} validation queries", flush=True)

    def say(what: str, done: int, total: int) -> None:
        if done % 5 == 0 or done == total:
            print(f"  {what}: {done}/{total} ({time.monotonic() - began:.0f} s)", flush=True)

    results: dict[str, dict] = {"rag": fixed_span_metrics(corpus, val)}
    # The ceiling of span writing: the gold evidence itself, quoted perfectly, as the spans.
    results["spans_oracle"] = fixed_span_metrics(corpus, val, lambda e: rlgf.gold_spans(texts[e.doc_id], e))
    adapters.ensure_slot(lm)
    adapters.clear(lm)
    hints: dict = {}  # the base model's questions and draft per query, written once for every row
    results["memorag_base"] = rlgf.evaluate(corpus, val, adapter=False, loglik=False, hints=hints, on_progress=say)
    print(results, flush=True)

    sft = [(e, rlgf.evidence_text(texts[e.doc_id], e)) for e in train]
    train_cfg = dict(lr=args.lr, seed=args.seed)
    started = time.monotonic()
    sft_run = rlgf.train(
        corpus, [], rlgf.TrainConfig(steps=0, sft_steps=args.sft_steps, **train_cfg), sft=sft, on_progress=say
    )
    adapters.mark(lm, "sft")
    results["memorag_sft"] = rlgf.evaluate(corpus, val, adapter=True, loglik=False, hints=hints, on_progress=say)
    print(results, flush=True)

    # Preference data sampled from the current clue writer (the warm-started one).
    weights = rlgf.RewardWeights(recall=1.0, loglik=args.loglik_weight)
    corpus.fusion = args.pair_fusion or args.fusion
    pairs, stats = rlgf.preference_data(
        corpus,
        train,
        n=args.candidates,
        temperature=args.temperature,
        margin=args.margin,
        weights=weights,
        seed=args.seed,
        budget_s=args.pref_minutes * 60,
        on_progress=say,
    )
    corpus.fusion = args.fusion  # every row is evaluated with one fusion
    print(f"{stats.pairs} pairs from {stats.examples} queries, {stats.candidates} candidates ({stats.seconds:.0f} s)")
    dpo_run = rlgf.train(corpus, pairs, rlgf.TrainConfig(steps=args.dpo_steps, **train_cfg), on_progress=say)
    adapters.mark(lm, "dpo")
    results["memorag_dpo"] = rlgf.evaluate(corpus, val, adapter=True, loglik=False, hints=hints, on_progress=say)
    rlgf_run = rlgf.train(
        corpus,
        pairs,
        rlgf.TrainConfig(steps=args.dpo_steps, sft_steps=args.sft_steps, **train_cfg),
        sft=sft,
        on_progress=say,
    )
    adapters.mark(lm, "rlgf")
    results["memorag_rlgf"] = rlgf.evaluate(corpus, val, adapter=True, loglik=False, hints=hints, on_progress=say)
    train_minutes = (time.monotonic() - started) / 60

    k = args.k
    base = results["rag"][f"recall@{k}"]
    rows = [
        {
            "strategy": name,
            f"recall@{k}": r[f"recall@{k}"],
            f"hit@{k}": r[f"hit@{k}"],
            "vs_rag": r[f"recall@{k}"] - base,
        }
        for name, r in results.items()
    ]
    print_table(
        rows,
        ["strategy", f"recall@{k}", f"hit@{k}", "vs_rag"],
        f"QMSum val, {len(val)} queries; trained on {len(train)} QMSum train queries",
    )
    write_json(
        args.json,
        {
            "strategies": results,
            "n_queries": len(val),
            "train_queries": len(train),
            "train_minutes": round(train_minutes, 1),
            "preference": vars(stats),
            "k": k,
            "beta": args.beta,
            "model": lm.name,
            "date": time.strftime("%Y-%m-%d"),
            "args": vars(args),
            "losses": {"sft": sft_run.losses, "dpo": dpo_run.losses, "rlgf": rlgf_run.losses},
            "memories": memory_report.memory,
        },
    )


if __name__ == "__main__":
    main()
