"""Which key/value pairs of a window deserve to stay in memory.

A scorer sees one layer at a time: the window's last queries (after RoPE,
captured inside attention), and the layer's keys over memory + window. It
returns one score per KV head and window token; higher means keep.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F


class Scorer(Protocol):
    name: str
    needs_queries: bool

    def __call__(self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int) -> torch.Tensor:
        """queries [1, H, n, D] or None; keys [1, KVH, M + W, D] -> scores [KVH, W]."""
        ...


class ObservationAttention:
    """SnapKV-style: attention the window's last queries pay to each window token.

    Softmax runs over memory and window keys together, so a token only scores
    high if it competes with what memory already holds; scores are pooled
    over neighbours so kept tokens come in small phrases, not lone subwords.
    """

    name = "snapkv"
    needs_queries = True

    def __init__(self, pool: int = 7) -> None:
        self.pool = pool

    def __call__(self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int) -> torch.Tensor:
        assert queries is not None, "snapkv scoring needs captured queries"
        _, heads, n_obs, dim = queries.shape
        kv_heads, total = keys.shape[1], keys.shape[2]
        window = total - memory_len
        groups = heads // kv_heads
        q = queries.float().reshape(kv_heads, groups * n_obs, dim)
        logits = torch.einsum("hqd,hkd->hqk", q, keys[0].float()) / math.sqrt(dim)
        logits = logits.view(kv_heads, groups, n_obs, total)
        # Observation query i sits at window offset window - n_obs + i.
        key_pos = torch.arange(window, device=keys.device)
        query_pos = torch.arange(window - n_obs, window, device=keys.device)
        future = key_pos[None, :] > query_pos[:, None]
        logits[..., memory_len:] = logits[..., memory_len:].masked_fill(future, float("-inf"))
        attn = logits.softmax(dim=-1)[..., memory_len:]
        scores = attn.sum(dim=(1, 2))
        if self.pool > 1:
            scores = F.avg_pool1d(scores[:, None], self.pool, stride=1, padding=self.pool // 2).squeeze(1)
        return scores[:, :window]


class KeyNorm:
    """Keys with a small L2 norm draw the most attention (Devoto et al., 2024)."""

    name = "keynorm"
    needs_queries = False

    def __call__(self, queries: torch.Tensor | None, keys: torch.Tensor, memory_len: int) -> torch.Tensor:
        return -keys[0, :, memory_len:].float().norm(dim=-1)


SCORERS: dict[str, type] = {"snapkv": ObservationAttention, "keynorm": KeyNorm}


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}") from None
