"""Which key/value pairs of a window deserve to stay in memory.

A scorer sees one layer at a time: the window queries it asked to observe (after RoPE,
captured inside attention), the layer's keys over memory + window and, for
a scorer that asks for it, how surprised the model was by each window token.
It returns one score per KV head and window token; higher means keep.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F


class Scorer(Protocol):
    name: str
    needs_surprisal: bool

    def observers(self, width: int) -> torch.Tensor:
        """Window offsets of the queries to capture (sorted); empty for a scorer that needs none."""
        ...

    def __call__(
        self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int, surprisal: torch.Tensor | None = None
    ) -> torch.Tensor:
        """queries [1, H, n, D] at ``observers(W)`` or None; keys [1, KVH, M + W, D]; surprisal [W] -> [KVH, W]."""
        ...


class ObservationAttention:
    """SnapKV-style: attention the window's last queries pay to each window token.

    Softmax runs over memory and window keys together, so a token only scores
    high if it competes with what memory already holds; scores are pooled
    over neighbours so kept tokens come in small phrases, not lone subwords.
    """

    name = "snapkv"
    needs_surprisal = False

    def __init__(self, pool: int = 7, observers: int = 32) -> None:
        self.pool = pool
        self.n_observers = observers

    def observers(self, width: int) -> torch.Tensor:
        n = min(self.n_observers, width)
        return torch.arange(width - n, width)

    def __call__(
        self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int, surprisal: torch.Tensor | None = None
    ) -> torch.Tensor:
        assert queries is not None, "observation scoring needs captured queries"
        _, heads, n_obs, dim = queries.shape
        kv_heads, total = keys.shape[1], keys.shape[2]
        window = total - memory_len
        groups = heads // kv_heads
        q = queries.float().reshape(kv_heads, groups * n_obs, dim)
        logits = torch.einsum("hqd,hkd->hqk", q, keys[0].float()) / math.sqrt(dim)
        logits = logits.view(kv_heads, groups, n_obs, total)
        key_pos = torch.arange(window, device=keys.device)
        query_pos = self.observers(window).to(keys.device)
        future = key_pos[None, :] > query_pos[:, None]
        logits[..., memory_len:] = logits[..., memory_len:].masked_fill(future, float("-inf"))
        attn = logits.softmax(dim=-1)[..., memory_len:]
        scores = self.reduce(attn.sum(dim=1), future)
        if self.pool > 1:
            scores = F.avg_pool1d(scores[:, None], self.pool, stride=1, padding=self.pool // 2).squeeze(1)
        return scores[:, :window]

    def reduce(self, attn: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """[KVH, n_obs, W] attention -> [KVH, W] scores."""
        return attn.sum(dim=1)


class SpreadObservation(ObservationAttention):
    """Observers spread evenly over the window, not only at its end.

    The last queries of a window look at what the window ends on; a fact
    stated early and never mentioned again gets no attention from them, and
    a memory is written before anyone knows the question. Queries from every
    part of the window each vote for what they attend to; a token's score is
    its mean attention from the observers that can see it, so early tokens
    are not favoured just for being visible to more of them.
    """

    name = "spread"

    def __init__(self, pool: int = 7, observers: int = 64) -> None:
        super().__init__(pool, observers)

    def observers(self, width: int) -> torch.Tensor:
        n = min(self.n_observers, width)
        return torch.linspace(0, width - 1, n).round().long().unique()

    def reduce(self, attn: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        seen_by = (~future).sum(dim=0).clamp(min=1)  # observers at or after each token
        return attn.sum(dim=1) / seen_by


class KeyNorm:
    """Keys with a small L2 norm draw the most attention (Devoto et al., 2024)."""

    name = "keynorm"
    needs_surprisal = False

    def observers(self, width: int) -> torch.Tensor:
        return torch.arange(0)

    def __call__(
        self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int, surprisal: torch.Tensor | None = None
    ) -> torch.Tensor:
        return -keys[0, :, memory_len:].float().norm(dim=-1)


class Surprisal:
    """Keep the passages the model did not see coming (information content).

    A memory is written before anyone asks, so attention-based scores favour
    what the text itself keeps returning to; a fact stated once (a code, a
    date, a name) draws no later attention and is dropped. How badly the
    model predicted a token is a question-agnostic measure of what it could
    not reconstruct from the rest (as Selective Context and LLMLingua prune
    prompts). Scores are averaged over a phrase-sized neighbourhood, so a
    surprising number keeps the sentence that says what it is, and every
    layer and head keeps the same tokens: the memory reads as whole phrases.
    """

    name = "surprisal"
    needs_surprisal = True

    def __init__(self, pool: int = 15) -> None:
        self.pool = pool

    def observers(self, width: int) -> torch.Tensor:
        return torch.arange(0)

    def __call__(
        self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int, surprisal: torch.Tensor | None = None
    ) -> torch.Tensor:
        assert surprisal is not None, "surprisal scoring needs the window's token surprisal"
        scores = surprisal.float()[None, None]
        if self.pool > 1:
            scores = F.avg_pool1d(scores, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False)
        return scores[0, :, : surprisal.numel()].expand(keys.shape[1], -1)


SCORERS: dict[str, type] = {
    "snapkv": ObservationAttention,
    "spread": SpreadObservation,
    "keynorm": KeyNorm,
    "surprisal": Surprisal,
}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}") from None
