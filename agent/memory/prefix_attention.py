"""Attention of a window that reads on top of a memory, in two kernel calls.

While a memory forms, each window's queries see every memory token and the
window causally. Handing SDPA that pattern as a mask keeps it off its fast
paths on CPU; instead the window attends to the memory with no mask and to
itself with ``is_causal``, and the two partial results are merged by their
log-sum-exp, which is exact up to rounding and faster (docs/benchmarks.md,
memory formation).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_local = threading.local()


@contextmanager
def reading_over_memory(memory_len: int) -> Iterator[None]:
    """Declare that this thread's next forward pass is a window after ``memory_len`` memory tokens."""
    _local.memory_len = memory_len
    try:
        yield
    finally:
        _local.memory_len = None


def split_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``(output [B, Q, H, D], None)`` like transformers' SDPA, or None where the split does not apply."""
    memory_len = getattr(_local, "memory_len", None)
    width = query.shape[2]
    if (
        not memory_len
        or query.device.type != "cpu"
        or width < 2
        or key.shape[2] != memory_len + width
        or dropout
        or kwargs.get("softcap") is not None
        or kwargs.get("position_bias") is not None
        or (_sliding_window(module, kwargs) or key.shape[2]) < key.shape[2]
    ):
        return None
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    own, own_lse = flash(query, key[:, :, memory_len:], value[:, :, memory_len:], is_causal=True, scale=scaling)[:2]
    mem, mem_lse = flash(query, key[:, :, :memory_len], value[:, :, :memory_len], scale=scaling)[:2]
    total = torch.logaddexp(own_lse, mem_lse)
    out = own.float() * (own_lse - total).exp()[..., None] + mem.float() * (mem_lse - total).exp()[..., None]
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _sliding_window(module, kwargs: dict) -> int | None:
    """The layer's attention window: passed to attention, set per layer (Gemma, Qwen) or in the config."""
    if "sliding_window" in kwargs:
        return kwargs["sliding_window"]
    if hasattr(module, "sliding_window"):
        return module.sliding_window
    return getattr(module.config, "sliding_window", None)
