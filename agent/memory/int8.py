"""Int8 storage for memory K/V: half the bytes of bf16, with scales kept beside the values.

Keys are scaled per channel and values per token (the KIVI split): a key's
few outlier channels would swamp a per-token scale, while values vary by
token. Scales are float16, so a value costs one byte plus 2/head_dim.
"""

from __future__ import annotations

import torch

LEVELS = 127
_TINY = 1e-8


def quantize(tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 along ``dim`` (the scale is shared across it): (values, float16 scales)."""
    scale = (tensor.float().abs().amax(dim=dim, keepdim=True) / LEVELS).clamp_min(_TINY).half()
    values = torch.round(tensor.float() / scale.float()).clamp_(-LEVELS, LEVELS).to(torch.int8)
    return values, scale


def dequantize(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return (values.float() * scale.float()).to(dtype)


def quantize_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[kv_heads, M, head_dim] -> one scale per head and channel, [kv_heads, 1, head_dim]."""
    return quantize(keys, dim=1)


def quantize_values(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[kv_heads, M, head_dim] -> one scale per head and token, [kv_heads, M, 1]."""
    return quantize(values, dim=2)
