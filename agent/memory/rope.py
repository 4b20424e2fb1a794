"""Re-rotate RoPE keys from the positions they were computed at to new ones.

Rotations compose: a key rotated for position p, rotated again by (q - p),
equals the key rotated for q. Values carry no position and never change.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rerotate_keys(keys: torch.Tensor, delta: torch.Tensor, rotary_emb: torch.nn.Module) -> torch.Tensor:
    """Rotate ``keys`` [..., heads, n, d] by ``delta`` [heads, n] positions (in float32).

    ``rotary_emb`` is the model's own rotary module, so any RoPE variant it
    implements with a position-linear angle (default, linear, llama3) applies.
    """
    if not bool(delta.any()):
        return keys
    heads, n = delta.shape
    probe = torch.zeros(1, dtype=torch.float32, device=keys.device)
    cos, sin = rotary_emb(probe, delta.to(keys.device).reshape(heads, n))
    scale = float(getattr(rotary_emb, "attention_scaling", 1.0) or 1.0)
    cos, sin = cos.float() / scale, sin.float() / scale
    k = keys.float()
    return (k * cos + rotate_half(k) * sin).to(keys.dtype)
