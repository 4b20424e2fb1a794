"""Attention of a window that reads on top of a memory, in two kernel calls.

While a memory forms, each window's queries see every memory token and the
window causally. Handing SDPA that pattern as a mask keeps it off its fast
paths on CPU; instead the window attends to the memory with no mask and to
itself with ``is_causal``, and the two partial results are merged by their
log-sum-exp, which is exact up to rounding and faster (docs/benchmarks.md,
memory formation).

The same split scores several short continuations of one prompt in a single
row: each continuation is a segment of the window that sees the memory and
only its own earlier tokens, so the memory is neither copied per candidate
nor read through a mask.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_local = threading.local()


@contextmanager
def reading_over_memory(memory_len: int, segments: torch.Tensor | None = None) -> Iterator[None]:
    """Declare that this thread's next forward pass is a window after ``memory_len`` memory tokens.

    With ``segments`` (one id per window token) a token sees the memory and the
    earlier tokens of its own segment only; a layer the split cannot run then
    raises rather than fall back to plain causal attention, which would be wrong.
    """
    _local.memory_len, _local.segments = memory_len, segments
    try:
        yield
    finally:
        _local.memory_len = _local.segments = None


def split_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``(output [B, Q, H, D], None)`` like transformers' SDPA, or None where the split does not apply."""
    memory_len = getattr(_local, "memory_len", None)
    segments = getattr(_local, "segments", None)
    width = query.shape[2]
    if not memory_len:
        return None
    if (
        query.device.type != "cpu"
        or (width < 2 and segments is None)
        or key.shape[2] != memory_len + width
        or dropout
        or kwargs.get("softcap") is not None
        or kwargs.get("position_bias") is not None
        or (_sliding_window(module, kwargs) or key.shape[2]) < key.shape[2]
    ):
        if segments is not None:
            raise RuntimeError("separate continuations need the split attention, which this layer cannot run")
        return None
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if segments is None:
        own, own_lse = flash(query, key[:, :, memory_len:], value[:, :, memory_len:], is_causal=True, scale=scaling)[:2]
    else:
        own, own_lse = _segment_attention(query, key[:, :, memory_len:], value[:, :, memory_len:], segments, scaling)
    mem, mem_lse = flash(query, key[:, :, :memory_len], value[:, :, :memory_len], scale=scaling)[:2]
    total = torch.logaddexp(own_lse, mem_lse)
    out = own.float() * (own_lse - total).exp()[..., None] + mem.float() * (mem_lse - total).exp()[..., None]
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _segment_attention(query, key, value, segments: torch.Tensor, scaling: float | None):
    """Causal attention within each segment of a short window: (output, log-sum-exp) like the flash kernel's."""
    width = query.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    order = torch.arange(width, device=query.device)
    seen = (segments[:, None] == segments[None, :]) & (order[:, None] >= order[None, :])
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    scores = scores.masked_fill(~seen, float("-inf"))
    lse = scores.logsumexp(-1)
    out = torch.matmul((scores - lse[..., None]).exp(), value.float())
    return out, lse


def _sliding_window(module, kwargs: dict) -> int | None:
    """The layer's attention window: passed to attention, set per layer (Gemma, Qwen) or in the config."""
    if "sliding_window" in kwargs:
        return kwargs["sliding_window"]
    if hasattr(module, "sliding_window"):
        return module.sliding_window
    return getattr(module.config, "sliding_window", None)
