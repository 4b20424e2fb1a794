"""Re-rotate RoPE keys from the positions they were computed at to new ones.

Rotations compose: a key rotated for position p, rotated again by (q - p),
equals the key rotated for q. Values carry no position and never change.
The angles come from the model's own rotary module, so every RoPE variant
whose angle is linear in position (default, linear, llama3, yarn) applies;
models that rotate only part of each head (GPT-NeoX, Phi, StableLM) keep
the rest as is, and models with a theta per layer type (Gemma 3's sliding
and global layers) rotate each layer with its own.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass(frozen=True)
class KeyRotation:
    """How each layer of one model rotates its keys: the rotary module and the layer's type."""

    rotary: torch.nn.Module
    layer_types: tuple[str | None, ...]

    def angles(self, layer: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [*positions.shape, rotary_dim] for ``layer``, without attention scaling."""
        probe = torch.zeros(1, dtype=torch.float32, device=positions.device)
        kind = self.layer_types[layer]
        extra = () if kind is None else (kind,)
        flat = positions.reshape(1, -1) if positions.dim() == 1 else positions
        cos, sin = self.rotary(probe, flat, *extra)
        # YaRN scales cos and sin by a constant (applied once, when the key was first rotated):
        # read it off position 0, where cos is exactly that constant.
        scale = float(self.rotary(probe, torch.zeros(1, 1, dtype=flat.dtype, device=flat.device), *extra)[0].max())
        shape = (*positions.shape, cos.shape[-1])
        return (cos.float() / scale).reshape(shape), (sin.float() / scale).reshape(shape)

    def rerotate(self, keys: torch.Tensor, delta: torch.Tensor, layer: int) -> torch.Tensor:
        """Rotate ``keys`` [..., heads, n, d] of ``layer`` by ``delta`` [heads, n] positions (in float32)."""
        if not bool(delta.any()):
            return keys
        cos, sin = self.angles(layer, delta.to(keys.device))
        dim = cos.shape[-1]  # partial rotary: only the first ``dim`` channels carry position
        k = keys.float()
        turned, rest = k[..., :dim], k[..., dim:]
        turned = turned * cos + rotate_half(turned) * sin
        return torch.cat([turned, rest], dim=-1).to(keys.dtype) if rest.shape[-1] else turned.to(keys.dtype)


def key_rotation(model: torch.nn.Module) -> KeyRotation:
    """The rotation of ``model``'s layers (``agent.models.check_supported`` has vetted the model)."""
    rotary = model.base_model.rotary_emb
    layers = model.config.num_hidden_layers
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        return KeyRotation(rotary, tuple(model.config.layer_types))
    return KeyRotation(rotary, (None,) * layers)
