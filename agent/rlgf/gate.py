"""The gate: a new adapter is promoted only if it retrieves better on held-out feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent import programs
from agent.backends import LocalBackend
from agent.metrics import gold_chunk_ids, hit_at_k, recall_at_k
from agent.rlgf.corpus import Corpus, Example, Progress
from agent.rlgf.rewards import answer_loglik, retrieve_with


def evaluate(
    corpus: Corpus,
    examples: Sequence[Example],
    *,
    adapter: bool,
    loglik: bool = True,
    hints: dict | None = None,
    on_progress: Progress | None = None,
) -> dict[str, float]:
    """Recall@k and hit@k of the pipeline's fused retrieval, and the answer's log-likelihood, per example mean.

    ``hints`` keeps the base model's other clues (sharper questions, the draft)
    per example between calls: it writes them greedily, so two span writers
    compared on the same examples share them. An example given no hints
    retrieves with the question and its spans alone.
    """
    recalls, hits, logliks = [], [], []
    hints = {} if hints is None else hints
    for i, example in enumerate(examples):
        if on_progress:
            on_progress("evaluating", i, len(examples))
        backend = LocalBackend(corpus.lm, corpus.memory(example.doc_id))
        spans = programs.write_spans(backend, example.question, adapter=adapter)
        if example not in hints:
            hints[example] = programs.Clues([], *programs.write_hints(backend, example.question)).hints()
        found = retrieve_with(corpus, example, spans, hints[example])
        gold = gold_chunk_ids(corpus.chunks(example.doc_id), list(example.evidence))
        if gold:
            ids = [e.chunk.id for e in found]
            recalls.append(recall_at_k(gold, ids, corpus.k))
            hits.append(hit_at_k(gold, ids, corpus.k))
        if loglik:
            logliks.append(answer_loglik(corpus, example, found))
    k = corpus.k
    out = {"n": float(len(examples))}
    if recalls:
        out |= {f"recall@{k}": sum(recalls) / len(recalls), f"hit@{k}": sum(hits) / len(hits)}
    if logliks:
        out["answer_loglik"] = sum(logliks) / len(logliks)
    return out


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def gate(
    candidate: dict[str, float],
    current: dict[str, float],
    *,
    k: int = 5,
    margin: float = 0.01,
    loglik_tolerance: float = 0.05,
) -> Decision:
    """Promote when recall@k (or, without gold spans, the answer log-likelihood) gains ``margin``
    and the answer log-likelihood does not fall by more than ``loglik_tolerance``."""
    key = f"recall@{k}" if f"recall@{k}" in candidate and f"recall@{k}" in current else "answer_loglik"
    if key not in candidate or key not in current:
        return Decision(False, "no held-out metric to compare")
    gain = candidate[key] - current[key]
    if gain < margin:
        return Decision(False, f"{key} {candidate[key]:.4f} vs {current[key]:.4f}: gain {gain:+.4f} < margin {margin}")
    drop = current.get("answer_loglik", 0.0) - candidate.get("answer_loglik", 0.0)
    if key != "answer_loglik" and drop > loglik_tolerance:
        return Decision(False, f"{key} gains {gain:+.4f} but answer log-likelihood falls {drop:.4f}")
    return Decision(True, f"{key} {candidate[key]:.4f} vs {current[key]:.4f}: gain {gain:+.4f} >= margin {margin}")
