"""Build the cache a memory is read from, spread over the span the model reads well.

The default model copies a planted fact back from 2,000 tokens of full
context but ranks it at chance from 6,000, although its positions go to
8,192: its attention fades with distance. So a memory longer than the
model's ``read_span`` is read with its positions spread evenly over that
span (fractional positions: RoPE angles are linear in position), and every
memory token sits within ``read_span`` of the prompt. The stored memory
and its formation are unchanged; only the cache built for reading moves.
"""

from __future__ import annotations

import torch

from agent.memory.rope import key_rotation
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel


def read_scale(memory_tokens: int, span: int) -> float:
    """Position step between memory tokens when read: 1 unless the memory outgrows ``span``."""
    return span / memory_tokens if 0 < span < memory_tokens else 1.0


def memory_cache(lm: LoadedModel, memory: GlobalMemory):
    """A fresh cache holding ``memory`` as ``lm`` reads it, and the prompt's first position."""
    cache = memory.to_cache(lm.device, lm.dtype)
    length = len(memory)
    scale = read_scale(length, lm.read_span)
    if scale == 1.0:
        return cache, length
    at = torch.arange(length, dtype=torch.float32, device=lm.device)
    delta = (at * scale - at).expand(memory.meta.kv_heads, -1)
    rotation = key_rotation(lm.model)
    for i, layer in enumerate(cache.layers):
        layer.keys = rotation.rerotate(layer.keys, delta, i)
    return cache, lm.read_span
