"""A long memory is read over the span the model reads well, and that makes far facts readable."""

from __future__ import annotations

from dataclasses import replace

import torch

from agent.chat import chat_prompt
from agent.datasets import NEEDLES, load_needle
from agent.memory.decoding import score_continuations
from agent.memory.formation import form_memory, tokenize_document
from agent.memory.reading import memory_cache, read_scale
from agent.programs import PROMPTS
from tests.conftest import SHARED_DATA, essays_text


def test_read_scale_spreads_only_memories_longer_than_the_span():
    assert read_scale(500, 2048) == 1.0
    assert read_scale(2048, 2048) == 1.0
    assert read_scale(4096, 2048) == 0.5
    assert read_scale(4096, 0) == 1.0  # 0 turns spreading off


@torch.inference_mode()
def test_memory_within_the_span_is_read_as_stored(real_lm):
    ids = tokenize_document(real_lm, essays_text(2000))[:300]
    memory = form_memory(real_lm, ids, beta=4, window=128, storage_dtype=torch.float32)
    cache, start = memory_cache(replace(real_lm, read_span=len(memory)), memory)
    assert start == len(memory)
    for layer, keys in zip(cache.layers, memory.keys, strict=True):
        assert torch.equal(layer.keys[0], keys)


@torch.inference_mode()
def test_spread_keys_equal_the_documents_keys_rotated_straight_to_the_spread_positions(real_lm):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    ids = tokenize_document(real_lm, essays_text(3000))[:400]
    memory = form_memory(real_lm, ids, beta=1, window=128, storage_dtype=torch.float32)
    unrotated: list[torch.Tensor] = []  # each layer's keys before RoPE, from one plain pass
    hooks = [
        layer.self_attn.k_proj.register_forward_hook(lambda _m, _i, out: unrotated.append(out))
        for layer in real_lm.model.base_model.layers
    ]
    try:
        real_lm.model(input_ids=torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    span = 100
    cache, start = memory_cache(replace(real_lm, read_span=span), memory)
    assert start == span
    positions = (torch.arange(len(ids)) * (span / len(ids)))[None]
    cos, sin = real_lm.model.base_model.rotary_emb(unrotated[0], positions)
    heads, dim = memory.meta.kv_heads, memory.meta.head_dim
    for layer, raw in zip(cache.layers, unrotated, strict=True):
        raw = raw.view(1, len(ids), heads, dim).transpose(1, 2)
        _, expected = apply_rotary_pos_emb(raw, raw, cos, sin)
        torch.testing.assert_close(layer.keys, expected, rtol=1e-4, atol=1e-4)
    assert positions[0, -1] < span <= positions[0, -1] + 1  # the prompt follows right after


@torch.inference_mode()
def test_facts_far_back_in_a_long_memory_are_read_when_spread(real_lm):
    """Four facts in 6,000 tokens of essays, all kept (beta 1): spread, the model ranks each answer first of four
    (measured: 1.0 spread, 1.5 unspread; among six candidates 1.0 and 2.0)."""
    sample = next(load_needle(SHARED_DATA / "needle", limit=1, words=4500, facts=4))
    memory = form_memory(real_lm, tokenize_document(real_lm, sample.text), beta=1, window=1024)
    assert len(memory) > 5000

    def mean_rank(lm) -> float:
        ranks = []
        for needle in NEEDLES[:4]:
            lead = needle.statement[: needle.statement.index(needle.answer)].rstrip()
            question = chat_prompt(lm.tokenizer, PROMPTS["draft_answer"].format(question=needle.question))
            prompt = question + lm.tokenizer(lead)["input_ids"]
            skip = len(lm.tokenizer(lead)["input_ids"])
            candidates = [  # three distractors: chance is rank 2.5; the prompt is read once for all four
                lm.tokenizer(f"{lead} {candidate}")["input_ids"][skip:]
                for candidate in (needle.answer, *needle.distractors[:3])
            ]
            scores = [sum(lps) / len(lps) for lps in score_continuations(lm, memory, prompt, candidates)]
            ranks.append(1 + sum(s > scores[0] for s in scores[1:]))
        return sum(ranks) / len(ranks)

    spread, unspread = mean_rank(replace(real_lm, read_span=1024)), mean_rank(replace(real_lm, read_span=0))
    assert spread <= 1.5, spread
    assert spread < unspread, (spread, unspread)
