"""The split attention of a window over a memory equals masked attention."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from agent.memory.formation import form_memory
from agent.memory.prefix_attention import reading_over_memory, split_attention


def _masked_reference(query, key, value, memory_len, groups):
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    width = query.shape[2]
    mask = torch.ones(width, memory_len + width, dtype=torch.bool).tril(memory_len)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("memory_len", [1, 37, 300])
def test_split_equals_masked_attention(memory_len):
    torch.manual_seed(0)
    heads, kv_heads, width, dim = 6, 2, 50, 16
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, config=SimpleNamespace())
    query = torch.randn(1, heads, width, dim)
    key, value = torch.randn(2, 1, kv_heads, memory_len + width, dim).unbind(0)
    with reading_over_memory(memory_len):
        out, _ = split_attention(module, query, key, value, None)
    expected = _masked_reference(query, key, value, memory_len, heads // kv_heads)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_split_applies_only_to_a_window_over_a_memory():
    module = SimpleNamespace(num_key_value_groups=1, config=SimpleNamespace(sliding_window=None))
    query, key = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 12, 4)
    assert split_attention(module, query, key, key, None) is None, "outside formation: plain SDPA"
    with reading_over_memory(4):
        assert split_attention(module, query[:, :, :1], key[:, :, :5], key[:, :, :5], None) is None  # decoding
        assert split_attention(module, query, key[:, :, :10], key[:, :, :10], None) is None  # not memory + window
        narrow = SimpleNamespace(num_key_value_groups=1, config=SimpleNamespace(sliding_window=6))
        assert split_attention(narrow, query, key, key, None) is None  # a sliding window needs its mask
        assert split_attention(module, query, key, key, None) is not None


def test_memory_formed_with_split_attention_matches_masked_attention(tiny_lm, monkeypatch):
    ids = torch.randint(0, len(tiny_lm.tokenizer), (700,)).tolist()
    split = form_memory(tiny_lm, ids, beta=4, window=128)
    monkeypatch.setattr("agent.memory.capture.split_attention", lambda *a, **kw: None)
    masked = form_memory(tiny_lm, ids, beta=4, window=128)
    assert torch.equal(split.token_indices, masked.token_indices), "the same tokens are kept"
    for a, b in zip(split.keys + split.values, masked.keys + masked.values, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("padded", [False, True])
def test_a_decoding_step_equals_sdpa(padded):
    """One new token's grouped attention equals SDPA over repeated keys, with and without padding."""
    from agent.memory.capture import decode_attention

    torch.manual_seed(1)
    batch, heads, kv_heads, length, dim = 3, 6, 2, 40, 16
    module = SimpleNamespace(training=False)
    query = torch.randn(batch, heads, 1, dim)
    key, value = torch.randn(2, batch, kv_heads, length, dim).unbind(0)
    mask = None
    if padded:  # rows padded on the left by 0, 5 and 11 positions
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        for row, pad in enumerate((0, 5, 11)):
            mask[row, ..., :pad] = False
    out, _ = decode_attention(module, query, key, value, mask, scaling=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(3, 1), value.repeat_interleave(3, 1), attn_mask=mask, scale=0.3
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert decode_attention(module, torch.randn(1, heads, 2, dim), key[:1], value[:1], None) is None  # not a step


def test_segments_see_the_memory_and_only_their_own_earlier_tokens():
    torch.manual_seed(2)
    heads, kv_heads, memory_len, dim = 4, 2, 30, 8
    segments = torch.tensor([0, 0, 0, 1, 2, 2])
    width = len(segments)
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, config=SimpleNamespace(sliding_window=None))
    query = torch.randn(1, heads, width, dim)
    key, value = torch.randn(2, 1, kv_heads, memory_len + width, dim).unbind(0)
    with reading_over_memory(memory_len, segments):
        out, _ = split_attention(module, query, key, value, None)
    own = (segments[:, None] == segments[None, :]) & torch.ones(width, width, dtype=torch.bool).tril()
    mask = torch.cat([torch.ones(width, memory_len, dtype=torch.bool), own], dim=1)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1), attn_mask=mask
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    narrow = SimpleNamespace(num_key_value_groups=2, config=SimpleNamespace(sliding_window=8))
    with reading_over_memory(memory_len, segments), pytest.raises(RuntimeError, match="split attention"):
        split_attention(narrow, query, key, value, None)  # never plain causal attention across segments


def test_continuations_scored_as_segments_equal_a_padded_batch(tiny_lm, monkeypatch):
    """Scoring candidates over a memory without copying it per candidate gives the padded batch's numbers."""
    from agent.memory.decoding import _segments_apply, score_continuations

    torch.manual_seed(3)
    memory = form_memory(tiny_lm, torch.randint(0, len(tiny_lm.tokenizer), (400,)).tolist(), beta=2, window=128)
    prompt = torch.randint(0, len(tiny_lm.tokenizer), (25,)).tolist()
    options = [[500, 600, 700], [42], [900, 901], [11, 12, 13, 14, 15]]
    assert _segments_apply(tiny_lm, len(memory) + len(prompt), options), "the tiny model takes the segment path"
    segments = score_continuations(tiny_lm, memory, prompt, options)
    monkeypatch.setattr("agent.memory.decoding._segments_apply", lambda *args: False)
    batch = score_continuations(tiny_lm, memory, prompt, options)
    assert [len(s) for s in segments] == [3, 1, 2, 5]
    for a, b in zip(segments, batch, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-4)
