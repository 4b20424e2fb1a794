"""Candidate span sets sampled from the memory, and preference pairs from their rewards."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from agent import programs
from agent.backends import LocalBackend
from agent.rlgf.corpus import Corpus, Example, Progress
from agent.rlgf.rewards import Candidate, RewardWeights, score

SAMPLE_TEMPERATURE = 0.7  # candidate clue sets: diverse enough to differ, still mostly on topic (docs/benchmarks.md)


def sample_candidates(
    corpus: Corpus, example: Example, n: int, *, temperature: float, seed: int, max_tokens: int = 96
) -> list[str]:
    """``n`` span sets sampled from the memory with the current adapter (reproducible for a seed)."""
    backend = LocalBackend(corpus.lm, corpus.memory(example.doc_id), adapter=True, seed=seed)
    texts = []
    for _ in range(n):
        state = programs.execute(
            programs.recall_spans, backend, question=example.question, heat=temperature, max_tokens=max_tokens
        )
        texts.append(state["clues"])
    return texts


@dataclass(frozen=True)
class Pair:
    example: Example
    chosen: str
    rejected: str
    gap: float


def make_pairs(scored: Sequence[tuple[Example, Sequence[Candidate]]], margin: float) -> list[Pair]:
    """(best, worst) of each example's candidates, kept where the reward gap exceeds ``margin``."""
    pairs = []
    for example, candidates in scored:
        if len(candidates) < 2:
            continue
        ranked = sorted(candidates, key=lambda c: c.reward, reverse=True)
        best, worst = ranked[0], ranked[-1]
        if best.reward - worst.reward > margin and best.text.strip() != worst.text.strip():
            pairs.append(Pair(example, best.text, worst.text, best.reward - worst.reward))
    return pairs


@dataclass
class PreferenceStats:
    examples: int = 0
    candidates: int = 0
    pairs: int = 0
    seconds: float = 0.0


def preference_data(
    corpus: Corpus,
    examples: Sequence[Example],
    *,
    n: int = 4,
    temperature: float = SAMPLE_TEMPERATURE,
    margin: float = 0.05,
    weights: RewardWeights = RewardWeights(),
    seed: int = 0,
    budget_s: float | None = None,
    on_progress: Progress | None = None,
) -> tuple[list[Pair], PreferenceStats]:
    """Sample, score and pair candidates for each example (stops early at ``budget_s``)."""
    started, stats, scored = time.monotonic(), PreferenceStats(), []
    cache: dict = {}
    for i, example in enumerate(examples):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        if on_progress:
            on_progress("sampling clues", i, len(examples))
        texts = sample_candidates(corpus, example, n, temperature=temperature, seed=seed + 1000 * i)
        scored.append((example, [score(corpus, example, t, weights, cache) for t in texts]))
        stats.examples += 1
        stats.candidates += len(texts)
    pairs = make_pairs(scored, margin)
    stats.pairs, stats.seconds = len(pairs), time.monotonic() - started
    return pairs, stats


# training ---------------------------------------------------------------------
