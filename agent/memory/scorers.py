"""Which key/value pairs of a window deserve to stay in memory.

Shaped like kvpress's presses: the base class owns the steps every scorer
shares (which queries to observe, keeping the top ``budget`` per head with
the attention sinks protected, gathering and re-rotating what is kept into
the memory); a scorer is one ``score()``. It sees one layer at a time: the
window queries it asked to observe (after RoPE, captured inside attention),
the layer's keys over memory + window and, for a scorer that asks for it,
how surprised the model was by each window token or the queries of a second
pass that repeats the window. It returns one score per KV head and window
token; higher means keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from agent import choices

Rerotate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SINK_TOKENS = 4  # the document's first tokens anchor every later query: always kept


@dataclass
class Scorer:
    name: ClassVar[str]
    needs_surprisal: ClassVar[bool] = False
    repeats_window: ClassVar[bool] = False  # its queries come from the model repeating the window (formation)
    prompt: ClassVar[str] = ""  # what asks the model to repeat, where it does

    def observers(self, width: int) -> torch.Tensor:
        """Window offsets of the queries to capture (sorted); none unless the scorer reads queries."""
        return torch.arange(0)

    def score(
        self,
        queries: torch.Tensor | None,
        keys: torch.Tensor,
        memory_len: int,
        surprisal: torch.Tensor | None = None,
        rerotate: Rerotate | None = None,
    ) -> torch.Tensor:
        """queries [1, H, n, D] at ``observers(W)`` (or the repeat's) or None; keys [1, KVH, M + W, D];
        surprisal [W]; ``rerotate(x, delta)`` turns RoPE'd states by ``delta`` positions -> [KVH, W]."""
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
        rerotate: Rerotate,
    ) -> torch.Tensor:
        """Replace the window in ``layer``'s cache by its kept pairs, moved to the positions right
        after the memory (``rerotate(keys, delta)``); returns the kept window offsets."""
        scores = self.score(queries, layer.keys, memory_len, surprisal, rerotate)
        top = self.keep(scores, budget, first_window)
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

    def score(self, queries, keys, memory_len, surprisal=None, rerotate=None):
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
        return _pooled(scores, self.pool)


@dataclass
class KeyNorm(Scorer):
    """Keys with a small L2 norm draw the most attention (Devoto et al., 2024)."""

    name: ClassVar[str] = "keynorm"

    def score(self, queries, keys, memory_len, surprisal=None, rerotate=None):
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

    def score(self, queries, keys, memory_len, surprisal=None, rerotate=None):
        if surprisal is None:
            raise ValueError("surprisal scoring needs the window's token surprisal")
        scores = surprisal.float()[None, None]
        if self.pool > 1:
            scores = F.avg_pool1d(scores, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False)
        return scores[0, :, : surprisal.numel()].expand(keys.shape[1], -1)


@dataclass
class ExpectedAttention(Scorer):
    """The attention the next window's queries can be expected to pay each token (kvpress's Expected Attention).

    No question exists when a memory is written, so the scorer asks what
    any later query will attend to: the window's queries, turned back to
    position 0, give a Gaussian per head (mean and covariance); for a query
    q ~ N(mu, S) at a later position p, E[exp(q.k / sqrt(d))] =
    exp(mu.k' / sqrt(d) + k'S k' / 2d) with k' the key turned by -p. Averaged
    over a few positions of the next window; normalised over the window per
    query head and summed over each KV head's group, as SnapKV is.
    """

    name: ClassVar[str] = "expected"
    pool: int = 7
    stride: int = 2  # every other window query estimates the statistics
    future: int = 4  # later query positions averaged over, spread across the next window

    def observers(self, width: int) -> torch.Tensor:
        return torch.arange(0, width, self.stride)

    def score(self, queries, keys, memory_len, surprisal=None, rerotate=None):
        if queries is None or rerotate is None:
            raise ValueError("expected attention needs the captured queries and the model's rotation")
        _, heads, n_obs, dim = queries.shape
        kv_heads, window = keys.shape[1], keys.shape[2] - memory_len
        groups = heads // kv_heads
        offsets = self.observers(window).to(keys.device)
        still = rerotate(queries[0].float(), -(memory_len + offsets)[None].expand(heads, -1))  # [H, n, D] at 0
        mu = still.mean(dim=1)  # [H, D]
        centred = still - mu[:, None]
        cov = centred.transpose(1, 2) @ centred / max(1, n_obs - 1)  # [H, D, D]
        window_keys = keys[0, :, memory_len:].float()  # [KVH, W, D] at memory_len + t
        scores = keys.new_zeros(kv_heads, window, dtype=torch.float32)
        for step in range(self.future):
            later = memory_len + window + (step * window) // self.future
            turned = rerotate(window_keys, torch.full((kv_heads, window), -later, device=keys.device))
            turned = turned.repeat_interleave(groups, dim=0)  # [H, W, D]: each query head's keys
            mean = torch.einsum("hd,hwd->hw", mu, turned) / math.sqrt(dim)
            spread = torch.einsum("hwd,hde,hwe->hw", turned, cov, turned) / (2 * dim)
            weights = (mean + spread).softmax(dim=-1).view(kv_heads, groups, window).sum(dim=1)
            scores += weights / self.future
        return _pooled(scores, self.pool)


@dataclass
class Reconstruction(Scorer):
    """What the model reads back when it repeats the window (KVzip's context reconstruction).

    After the window, the model is fed a request to repeat it followed by the
    window itself; each window token scores the most attention any repeat
    query (of its KV group) pays it. A token the model needs to reproduce the
    text is kept whatever the question turns out to be; the price is a second
    pass over every window.
    """

    name: ClassVar[str] = "reconstruct"
    repeats_window: ClassVar[bool] = True
    prompt: ClassVar[str] = "\n\nRepeat the previous context exactly.\n\n"
    rows: int = 256  # repeat queries scored at a time

    def score(self, queries, keys, memory_len, surprisal=None, rerotate=None):
        if queries is None:
            raise ValueError("reconstruction scoring needs the queries of the repeat pass")
        _, heads, n_rep, dim = queries.shape
        kv_heads, total = keys.shape[1], keys.shape[2]
        groups = heads // kv_heads
        k = keys[0].float()
        q = queries[0].float().reshape(kv_heads, groups * n_rep, dim)
        best = k.new_full((kv_heads, total - memory_len), float("-inf"))
        for s in range(0, q.shape[1], self.rows):  # softmax over memory + window: what the repeat can read
            weights = (torch.einsum("hqd,hkd->hqk", q[:, s : s + self.rows], k) / math.sqrt(dim)).softmax(dim=-1)
            best = torch.maximum(best, weights[..., memory_len:].amax(dim=1))
        return best


def _pooled(scores: torch.Tensor, pool: int) -> torch.Tensor:
    """Average each head's scores over ``pool`` neighbours: kept tokens come in phrases, not lone subwords."""
    width = scores.shape[-1]
    if pool > 1:
        scores = F.avg_pool1d(scores[:, None], pool, stride=1, padding=pool // 2).squeeze(1)
    return scores[:, :width]


SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (SnapKV, KeyNorm, Surprisal, ExpectedAttention, Reconstruction)
}
assert tuple(SCORERS) == choices.SCORERS, "agent.choices.SCORERS must name exactly the scorers"


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS[name]()
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(SCORERS)}") from None
