"""Which key/value pairs of a window deserve to stay in memory.

Shaped like kvpress's presses: the base class owns the steps every scorer
shares (which queries to observe, keeping the top ``budget`` per head with
the attention sinks protected, gathering and re-rotating what is kept into
the memory); a scorer is one ``score()``. It sees one layer at a time: the
window queries it asked to observe (after RoPE, captured inside attention),
the layer's keys over memory + window and, for a scorer that asks for it,
how surprised the model was by each window token. It returns one score per
KV head and window token; higher means keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from agent import choices

SINK_TOKENS = 4  # the document's first tokens anchor every later query: always kept


@dataclass
class Scorer:
    name: ClassVar[str]
    needs_surprisal: ClassVar[bool] = False

    def observers(self, width: int) -> torch.Tensor:
        """Window offsets of the queries to capture (sorted); none unless the scorer reads queries."""
        return torch.arange(0)

    def score(
        self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int, surprisal: torch.Tensor | None = None
    ) -> torch.Tensor:
        """queries [1, H, n, D] at ``observers(W)`` or None; keys [1, KVH, M + W, D]; surprisal [W] -> [KVH, W]."""
        raise NotImplementedError

    def keep(self, scores: torch.Tensor, budget: int, first_window: bool) -> torch.Tensor:
        """The ``budget`` best window offsets per head, in document order ([KVH, budget])."""
        scores = scores.contiguous()
        if first_window:
            scores[:, : min(SINK_TOKENS, budget)] = float("inf")
        return scores.topk(budget, dim=-1).indices.sort(dim=-1).values

    def compress(
        self,
        layer,
        memory_len: int,
        budget: int,
        *,
        queries: torch.Tensor | None,
        surprisal: torch.Tensor | None,
        first_window: bool,
        rerotate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Replace the window in ``layer``'s cache by its kept pairs, moved to the positions right
        after the memory (``rerotate(keys, delta)``); returns the kept window offsets."""
        top = self.keep(self.score(queries, layer.keys, memory_len, surprisal), budget, first_window)
        gather = top[None, :, :, None].expand(1, -1, -1, layer.keys.shape[-1])
        new_k = layer.keys[:, :, memory_len:].gather(2, gather)
        new_v = layer.values[:, :, memory_len:].gather(2, gather)
        new_k = rerotate(new_k, torch.arange(budget, device=top.device)[None, :] - top)
        layer.keys = torch.cat([layer.keys[:, :, :memory_len], new_k], dim=2)
        layer.values = torch.cat([layer.values[:, :, :memory_len], new_v], dim=2)
        return top


@dataclass
class SnapKV(Scorer):
    """Attention the window's last queries pay to each window token (SnapKV).

    Softmax runs over memory and window keys together, so a token only scores
    high if it competes with what memory already holds; scores are pooled
    over neighbours so kept tokens come in small phrases, not lone subwords.
    """

    name: ClassVar[str] = "snapkv"
    pool: int = 7
    last_queries: int = 32

    def observers(self, width: int) -> torch.Tensor:
        n = min(self.last_queries, width)
        return torch.arange(width - n, width)

    def score(self, queries, keys, memory_len, surprisal=None):
        if queries is None:
            raise ValueError("SnapKV scoring needs the captured queries")
        _, heads, n_obs, dim = queries.shape
        kv_heads, total = keys.shape[1], keys.shape[2]
        window = total - memory_len
        groups = heads // kv_heads
        q = queries.float().reshape(kv_heads, groups * n_obs, dim)
        logits = torch.einsum("hqd,hkd->hqk", q, keys[0].float()) / math.sqrt(dim)
        logits = logits.view(kv_heads, groups, n_obs, total)
        future = torch.arange(window, device=keys.device)[None, :] > self.observers(window).to(keys.device)[:, None]
        logits[..., memory_len:] = logits[..., memory_len:].masked_fill(future, float("-inf"))
        scores = logits.softmax(dim=-1)[..., memory_len:].sum(dim=(1, 2))  # over query groups and observers
        if self.pool > 1:
            scores = F.avg_pool1d(scores[:, None], self.pool, stride=1, padding=self.pool // 2).squeeze(1)
        return scores[:, :window]


@dataclass
class KeyNorm(Scorer):
    """Keys with a small L2 norm draw the most attention (Devoto et al., 2024)."""

    name: ClassVar[str] = "keynorm"

    def score(self, queries, keys, memory_len, surprisal=None):
        return -keys[0, :, memory_len:].float().norm(dim=-1)


@dataclass
class Surprisal(Scorer):
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

    name: ClassVar[str] = "surprisal"
    needs_surprisal: ClassVar[bool] = True
    pool: int = 15

    def score(self, queries, keys, memory_len, surprisal=None):
        if surprisal is None:
            raise ValueError("surprisal scoring needs the window's token surprisal")
        scores = surprisal.float()[None, None]
        if self.pool > 1:
            scores = F.avg_pool1d(scores, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False)
        return scores[0, :, : surprisal.numel()].expand(keys.shape[1], -1)


SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (SnapKV, KeyNorm, Surprisal)}
assert tuple(SCORERS) == choices.SCORERS, "agent.choices.SCORERS must name exactly the scorers"


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}") from None
