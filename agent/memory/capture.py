"""Capture the last queries of a window from inside attention.

Importance scores need query states after RoPE. Asking the model for
``output_attentions`` would force eager attention over the whole window;
instead an attention function wraps SDPA and, only while a capture is
active on this thread, keeps the queries at the scorer's chosen window
offsets in every layer. A window that reads over a memory is handed to
``prefix_attention`` (exact, faster on CPU) instead of masked SDPA.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from agent.memory.prefix_attention import split_attention

ATTENTION_NAME = "memorag_capture"  # no "sdpa" in the name: transformers would refuse models without SDPA
EAGER_ATTENTION_NAME = "memorag_capture_eager"
_local = threading.local()
_registered = False


@contextmanager
def capture_queries(offsets: torch.Tensor) -> Iterator[dict[int, torch.Tensor]]:
    """Yield a dict filled during the forward pass: layer index -> [B, H, len(offsets), D]."""
    captured: dict[int, torch.Tensor] = {}
    _local.capture = (offsets, captured)
    try:
        yield captured
    finally:
        _local.capture = None


def _capture(module, query) -> None:
    capture = getattr(_local, "capture", None)
    if capture is not None:
        offsets, captured = capture
        captured[module.layer_idx] = query[:, :, offsets.to(query.device), :].detach()


def _capturing_sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _capture(module, query)
    return split_attention(module, query, key, value, attention_mask, **kwargs) or sdpa_attention_forward(
        module, query, key, value, attention_mask, **kwargs
    )


def _capturing_eager(module, query, key, value, attention_mask, **kwargs):
    """For models SDPA cannot run exactly (Gemma 2 soft-caps its attention logits): their own eager attention."""
    _capture(module, query)
    return sys.modules[type(module).__module__].eager_attention_forward(
        module, query, key, value, attention_mask, **kwargs
    )


def attention_for(model: torch.nn.Module) -> str:
    """The capturing attention ``model`` runs exactly with: SDPA where it supports it, else eager."""
    return ATTENTION_NAME if getattr(model, "_supports_sdpa", False) else EAGER_ATTENTION_NAME


def register_capture_attention() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _capturing_sdpa)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    AttentionInterface.register(EAGER_ATTENTION_NAME, _capturing_eager)
    AttentionMaskInterface.register(EAGER_ATTENTION_NAME, eager_mask)
    _registered = True
