"""BM25 over a knowledge base's chunks: the exact terms a sentence embedding blurs.

``start_response``, ``:=`` or ``DEB_RULES_REQUIRES_ROOT`` and the dates in a
session header are words a user types and a 384-dimension embedding barely
tells apart; a lexical ranking beside the dense one finds them. The index is
derived from the stored chunks (their text and the context above them), so a
restart or a ``reindex`` rebuilds it with the matrix it sits beside; nothing
extra is stored to drift out of step. bm25s does the scoring.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from core import dates

_TOKEN = re.compile(r"[A-Za-z0-9_]+(?:[.:/-][A-Za-z0-9_]+)*")
_STOPWORDS = (
    "a an the of in on at to for from by with and or but is are was were be been being do does did has have had "
    "it its this that these those there their they them he she his her him we our you your i me my what which who "
    "whom whose when where why how many much as into about over under after before than then so not no yes can "
    "could would should will shall may might must also if up out one first last name names"
)
# What a long question asks the reader to do, not what the answer is about ("Summarize what happened to X").
_INSTRUCTIONS = (
    "summarize summarise summary discuss discussed discussion describe explain happened happen say said says "
    "talk talked tell told mention mentioned"
)
STOPWORDS = frozenset(_STOPWORDS.split()) | frozenset(_INSTRUCTIONS.split())


def stem(word: str) -> str:
    """Words cut to four letters: built, builder and building meet (crude, but it needs no lexicon)."""
    return word.replace("’", "'").removesuffix("'s")[:4]


def tokens(text: str) -> list[str]:
    """BM25 terms: words stemmed, identifiers kept whole as well as in their parts, a day's date as one term."""
    out: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        parts = [p for p in re.split(r"[._:/-]+", token) if p]
        if len(parts) > 1 or "_" in token:
            out.append(token)
        out += [stem(p) for p in parts if p not in STOPWORDS]
    return out + [dates.term(day) for day in dates.days(text)]  # one term per day, however it is written


class LexicalIndex:
    """BM25 scores of any query over a fixed list of texts."""

    def __init__(self, texts: Sequence[str]) -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # its import sets DEBUG, and it logs every index
        self.size = len(texts)
        corpus = [tokens(t) or ["_"] for t in texts]
        self.vocabulary = {t for doc in corpus for t in doc}
        self._bm25 = bm25s.BM25()
        if corpus:
            self._bm25.index(corpus, show_progress=False)

    def scores(self, query: str | Sequence[str]) -> np.ndarray:
        """BM25 of the query (text, or terms already cut) against every text; zeros when no term is known."""
        terms = tokens(query) if isinstance(query, str) else list(query)
        known = [t for t in terms if t in self.vocabulary]
        if not known or not self.size:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)

    def top(self, query: str, k: int) -> list[int]:
        """Positions of the ``k`` best-scoring texts that share a term with the query, best first."""
        scores = self.scores(query)
        matched = int(np.count_nonzero(scores > 0))
        k = min(k, matched)
        if k <= 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        return [int(i) for i in best[np.argsort(-scores[best], kind="stable")]]
