"""Answer and retrieval metrics for the evaluation harness.

Token F1 and exact match use SQuAD's normalization (lower case, no
punctuation, no articles, single spaces); ROUGE-L comes from Google's
``rouge-score``. Evidence recall@k is the fraction of gold chunks (chunks that
overlap a gold span) among the top k retrieved; hit@k is whether any is;
``covered_fraction`` counts gold characters instead, for comparing chunk sizes.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize(prediction) == normalize(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize(prediction).split(), normalize(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, gold: str) -> float:
    return _rouge().score(gold, prediction)["rougeL"].fmeasure


def best_of(metric, prediction: str, golds: list[str]) -> float:
    """A prediction scores against its closest gold answer (datasets list several)."""
    return max((metric(prediction, g) for g in golds), default=0.0)


def answer_recall(prediction: str, gold: str) -> float:
    """Share of the gold answer's words the prediction contains (a long right answer is not penalised)."""
    wanted = normalize(gold).split()
    if not wanted:
        return 0.0
    have = Counter(normalize(prediction).split())
    hits = sum(min(count, have[w]) for w, count in Counter(wanted).items())
    return hits / len(wanted)


def answer_in(evidence: str, golds: list[str]) -> float:
    """1.0 when some gold answer appears, as whole words, in the evidence.

    Tells retrieval's share of a short-answer question apart from the
    generator's: the generator cannot be blamed when the answer was not there.
    Punctuation (curly quotes and Markdown links included) separates words
    here, so "‘triggers-pending’" holds "triggers-pending".
    """
    text = f" {_words(evidence)} "
    return float(any(f" {g} " in text for g in map(_words, golds) if g))


_NOT_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)


def _words(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", _NOT_WORD.sub(" ", text.lower())).split())


Span = tuple[int, int]  # [start, end) in characters


def _covered(spans: list[Span], by: list[Span]) -> int:
    total = 0
    for start, end in spans:
        hit = [(max(start, s), min(end, e)) for s, e in by if s < end and e > start]
        merged: list[Span] = []
        for s, e in sorted(hit):
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        total += sum(e - s for s, e in merged)
    return total


def covered_fraction(gold: list[Span], retrieved: list[Span]) -> float:
    """Fraction of the gold evidence characters inside the retrieved chunks."""
    size = sum(e - s for s, e in gold)
    return _covered(gold, retrieved) / size if size else 0.0


def gold_chunk_ids(chunks, gold: list[Span]) -> set[str]:
    """Ids of the chunks that overlap any gold span."""
    return {c.id for c in chunks if any(c.char_start < e and s < c.char_end for s, e in gold)}


def recall_at_k(gold_ids: set[str], ranked_ids: list[str], k: int) -> float:
    return len(gold_ids & set(ranked_ids[:k])) / len(gold_ids) if gold_ids else 0.0


def hit_at_k(gold_ids: set[str], ranked_ids: list[str], k: int) -> float:
    return float(bool(gold_ids & set(ranked_ids[:k])))
