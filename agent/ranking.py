"""Signals that rank the evidence's sentences for a question, each measurable alone.

lexical   BM25 over the candidate sentences (with the headings above them), the
          question's identifiers and quoted terms counted twice; relative (best = 1)
dense     the embedder's question-to-sentence cosine (all-MiniLM-L6-v2 was trained
          on question/answer pairs); absolute
coverage  the share of the question's content words a sentence holds, rarer words
          weighing more; absolute
rank      the passage's retrieval rank as a prior, 1 / (1 + rank)
typed     1 where the sentence holds an answer of the kind a typed question asks
          for (a number, a date, an identifier, one of its two options), else 0;
          1 everywhere for other questions (computed in agent.reader)

``combine`` mixes them with ``Weights``; ``support`` is the absolute part that
decides whether the best sentence answers at all (a relative score cannot
tell an off-topic question from an answerable one).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from store.lexical import STOPWORDS, LexicalIndex, stem, tokens

SIGNALS = ("lexical", "dense", "coverage", "rank", "typed")

WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
# Code-looking words: snake_case, dotted.names, CamelCase inside, ALLCAPS_WITH, call(), --flags, /paths.
_IDENTIFIER = re.compile(
    r"`([^`]{1,60})`|[\"“']([^\"”']{2,60})[\"”']|"
    r"(\b[A-Za-z_][\w]*(?:_[\w]+|\.[A-Za-z_]\w*)+(?:\(\))?|\b[a-z]+[A-Z]\w*|\b[A-Z]{2,}[A-Z0-9_]*\b|--?[a-z][\w-]+)"
)


@dataclass(frozen=True)
class Weights:
    """How much each signal counts in the ranking (chosen on the technical-documents dev split)."""

    lexical: float = 0.15
    dense: float = 1.0
    coverage: float = 0.25
    rank: float = 0.0  # alone it ranks worst: the best passage's first sentence is rarely the answer
    typed: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SIGNALS}


DEFAULT_WEIGHTS = Weights()


def content_words(text: str) -> list[str]:
    return [stem(w) for w in WORD.findall(text.lower()) if w not in STOPWORDS]


def identifiers(question: str) -> list[str]:
    """The question's quoted terms and code-looking words, lower-cased, as BM25 terms."""
    found: list[str] = []
    for m in _IDENTIFIER.finditer(question):
        found += tokens(next(g for g in m.groups() if g))
    return list(dict.fromkeys(found))


def lexical(question: str, texts: Sequence[str]) -> np.ndarray:
    """BM25 over ``texts`` as their own corpus, scaled so the best is 1 (0 when nothing matches)."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    index = LexicalIndex(texts)
    scores = index.scores(question)
    extra = identifiers(question)
    if any(t in index.vocabulary for t in extra):  # an identifier the question names is the strongest evidence
        scores = scores + index.scores(extra)
    top = float(scores.max())
    return scores / top if top > 0 else scores


def dense(embedder, question: str, texts: Sequence[str]) -> np.ndarray:
    """Cosine of the question's embedding with each text's (embeddings are normalised)."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    vectors = embedder.encode([question, *texts])
    return np.clip(vectors[1:] @ vectors[0], -1.0, 1.0)


def coverage(question: str, texts: Sequence[str], counted: str | None = None) -> np.ndarray:
    """Share of the question's content words each text holds, words rare among ``texts`` weighing more.

    ``counted``: the noun a "how many" question counts, weighed twice.
    """
    asked = set(content_words(question))
    if not asked or not texts:
        return np.zeros(len(texts), dtype=np.float32)
    holds = [set(content_words(t)) for t in texts]
    frequency = Counter(w for words in holds for w in words & asked)
    weight = {w: math.log(1 + len(texts) / (1 + frequency[w])) for w in asked}
    if counted and stem(counted.lower()) in weight:
        weight[stem(counted.lower())] *= 2
    total = sum(weight.values())
    return np.asarray([sum(weight[w] for w in asked & words) / total for words in holds], dtype=np.float32)


def rank_prior(ranks: Sequence[int]) -> np.ndarray:
    return 1.0 / (1.0 + np.asarray(ranks, dtype=np.float32))


def combine(signals: dict[str, np.ndarray], weights: Weights = DEFAULT_WEIGHTS) -> np.ndarray:
    """The weighted sum of the signals (a missing one counts 0)."""
    n = len(next(iter(signals.values()))) if signals else 0
    total = np.zeros(n, dtype=np.float32)
    for name, w in weights.as_dict().items():
        if w and name in signals:
            total = total + w * signals[name]
    return total


def support(dense_score: float, coverage_score: float, mix: float = 0.5) -> float:
    """How well one sentence answers, on an absolute scale: the mean of its cosine and its coverage."""
    return (1 - mix) * dense_score + mix * coverage_score
