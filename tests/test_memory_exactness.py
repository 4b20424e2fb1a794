"""The compressed memory is exact where it must be: beta=1 and RoPE re-rotation."""

from __future__ import annotations

import torch

from agent.memory.formation import form_memory, tokenize_document
from agent.memory.rope import key_rotation
from tests.conftest import essays_text


def _layer_keys(lm, ids: torch.Tensor, positions: torch.Tensor) -> list[torch.Tensor]:
    from transformers import DynamicCache

    cache = DynamicCache()
    lm.model.base_model(input_ids=ids[None], position_ids=positions[None], cache=cache, use_cache=True)
    return [cache.layers[i].keys[0] for i in range(len(cache.layers))]


@torch.inference_mode()
def test_beta_one_memory_gives_full_context_logits(real_lm):
    ids = tokenize_document(real_lm, essays_text(3000))[:600]
    memory = form_memory(real_lm, ids[:-8], beta=1, window=256, storage_dtype=torch.float32)
    assert len(memory) == len(ids) - 8
    tail = torch.tensor([ids[-8:]])
    positions = torch.arange(len(memory), len(ids))[None]
    with_memory = real_lm.model(
        input_ids=tail, position_ids=positions, cache=memory.to_cache("cpu", torch.float32)
    ).logits[0]
    full = real_lm.model(input_ids=torch.tensor([ids])).logits[0, -8:]
    torch.testing.assert_close(with_memory, full, rtol=1e-4, atol=2e-4)


@torch.inference_mode()
def test_rerotated_keys_equal_keys_computed_at_new_positions(real_lm):
    ids = torch.tensor(tokenize_document(real_lm, essays_text(400))[:24])
    at_old = _layer_keys(real_lm, ids, torch.arange(300, 324))
    at_new = _layer_keys(real_lm, ids, torch.arange(5, 29))
    rotation = key_rotation(real_lm.model)
    for layer, (old, new) in enumerate(zip(at_old, at_new, strict=True)):
        delta = torch.full(old.shape[:2], -295)
        moved = rotation.rerotate(old[None], delta, layer)[0]
        torch.testing.assert_close(moved, new, rtol=1e-4, atol=1e-4)
