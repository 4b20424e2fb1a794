"""Formation keeps 1/beta of every window, stays in position range, and round-trips."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from agent.memory.formation import form_memory, memory_length, peak_positions, required_beta
from agent.memory.scorers import KeyNorm, SnapKV, Surprisal, get_scorer
from agent.memory.types import GlobalMemory
from store.errors import CorruptMemory, IncompatibleMemory


def _ids(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, 20000, (n,), generator=g).tolist()


@pytest.mark.parametrize("beta", [2, 8, 64])
def test_memory_keeps_ceil_window_over_beta(tiny_lm, beta):
    ids = _ids(700)
    memory = form_memory(tiny_lm, ids, beta=beta, window=128)
    expected = sum(math.ceil(min(128, 700 - s) / beta) for s in range(0, 700, 128))
    assert memory_length(700, 128, beta) == expected
    assert len(memory) == memory.meta.memory_tokens == expected
    assert memory.keys[0].shape == (2, expected, 16)
    assert memory.token_indices.shape == (2, 2, expected)
    assert memory.meta.doc_tokens == 700 and memory.meta.beta == beta
    # every kept slot points into its own window, in order
    idx = memory.token_indices
    assert int(idx.min()) >= 0 and int(idx.max()) < 700
    assert bool((idx[..., 1:] > idx[..., :-1]).all())


def test_document_far_beyond_position_range(tiny_lm):
    assert tiny_lm.max_positions == 512
    ids = _ids(6000, seed=1)  # 12x the tiny model's position range
    memory = form_memory(tiny_lm, ids, beta=16, window=128)
    assert len(memory) == sum(math.ceil(min(128, 6000 - s) / 16) for s in range(0, 6000, 128))
    assert len(memory) + 128 <= tiny_lm.max_positions
    assert memory.token_indices.max() > 5800  # the end of the document is remembered


def test_too_little_compression_is_refused(tiny_lm):
    need = required_beta(5000, 128, 512)
    assert peak_positions(5000, 128, need) <= 512 < peak_positions(5000, 128, need - 1)
    with pytest.raises(ValueError, match=f"use beta >= {need}"):
        form_memory(tiny_lm, _ids(5000), beta=need - 1, window=128)
    assert len(form_memory(tiny_lm, _ids(5000), beta=need, window=128)) == memory_length(5000, 128, need)
    with pytest.raises(ValueError, match="between 1 and 64"):
        form_memory(tiny_lm, _ids(10), beta=65)


def test_bytes_round_trip_is_bit_identical(tiny_lm):
    memory = form_memory(tiny_lm, _ids(300), beta=4, window=128, scorer="keynorm")
    data = memory.to_bytes()
    assert b"pickle" not in data[:200] and data[8:9] == b"{"  # safetensors JSON header
    again = GlobalMemory.from_bytes(data)
    assert again.meta == memory.meta
    for a, b in zip(memory.keys + memory.values, again.keys + again.values, strict=True):
        assert a.dtype == b.dtype == torch.bfloat16 and torch.equal(a, b)
    assert torch.equal(memory.token_indices, again.token_indices)
    assert again.to_bytes() == data


def test_damaged_bytes_and_foreign_models_are_refused(tiny_lm):
    memory = form_memory(tiny_lm, _ids(200), beta=4, window=128)
    with pytest.raises(CorruptMemory):
        GlobalMemory.from_bytes(b"\x00" * 64)
    data = bytearray(memory.to_bytes())
    with pytest.raises(CorruptMemory):
        GlobalMemory.from_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(IncompatibleMemory):
        memory.check_model("another-model")


def test_key_norm_keeps_the_smallest_keys():
    keys = torch.ones(1, 1, 10, 4)
    keys[0, 0, 7] *= 0.01
    scores = KeyNorm().score(None, keys, memory_len=4)
    assert scores.shape == (1, 6) and int(scores.argmax()) == 3


def test_observation_attention_finds_the_token_queries_look_at():
    torch.manual_seed(0)
    keys = torch.randn(1, 1, 40, 8) * 0.1
    target = torch.randn(8)
    keys[0, 0, 15] = target * 3  # window token 5 (memory is 10 long)
    queries = target.expand(1, 2, 4, 8).clone()  # 2 query heads share the KV head
    scores = SnapKV(pool=1, last_queries=4).score(queries, keys, memory_len=10)
    assert scores.shape == (1, 30) and int(scores.argmax()) == 5
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("nope")


def test_every_scorer_forms_a_memory(tiny_lm):
    from agent.memory.scorers import SCORERS

    ids = list(range(5, 205))
    for name in SCORERS:
        memory = form_memory(tiny_lm, ids, beta=4, window=64, scorer=name)
        assert memory.meta.scorer == name and len(memory) == sum(-(-min(64, 200 - s) // 4) for s in range(0, 200, 64))


def test_expected_attention_favours_keys_later_queries_will_find():
    """With RoPE left out, the score is softmax(mu.k / sqrt(d) + k S k / 2d): the mean query's direction first,
    then the direction the queries vary along over one they never move in."""
    from agent.memory.scorers import ExpectedAttention

    dim, width = 4, 8
    queries = torch.zeros(1, 2, width // 2, dim)  # two query heads on one KV head, every other token observed
    queries[..., 0] = 6.0  # mean term 6 * 3 / 2 = 9 against the variance term 9 * 16 / 3 / 8 = 6
    queries[..., 1] = torch.tensor([2.0, -2.0, 2.0, -2.0])  # varies along axis 1, never along 2 or 3
    keys = torch.zeros(1, 1, 3 + width, dim)  # three memory tokens, then the window
    keys[0, 0, 3 + 2, 0] = 3.0  # along the mean query
    keys[0, 0, 3 + 5, 1] = 3.0  # along the variance
    keys[0, 0, 3 + 6, 2] = 3.0  # along neither
    scores = ExpectedAttention(pool=1, future=2).score(queries, keys, 3, rerotate=lambda x, delta: x)
    assert scores.shape == (1, width)
    order = scores[0].argsort(descending=True).tolist()
    assert order[:2] == [2, 5] and scores[0, 5] > scores[0, 6]
    torch.testing.assert_close(scores.sum(), torch.tensor(2.0))  # one softmax per query head


def test_the_repeat_pass_leaves_the_cache_and_captures_every_repeated_token(tiny_lm):
    from transformers import DynamicCache

    from agent.memory.formation import repeat_queries
    from agent.memory.scorers import Reconstruction

    ids = torch.tensor(_ids(48, seed=5))
    cache = DynamicCache()
    tiny_lm.model.base_model(input_ids=ids[None], cache=cache, use_cache=True)
    before = [layer.keys.clone() for layer in cache.layers]
    from agent.memory.formation import tokenize_document

    queries = repeat_queries(tiny_lm, cache, ids, 48, tokenize_document(tiny_lm, Reconstruction.prompt))
    assert all(torch.equal(layer.keys, k) for layer, k in zip(cache.layers, before, strict=True))
    assert queries[0].shape[2] == 48  # the repeated window's queries, not the request's
    scores = Reconstruction().score(queries[0], cache.layers[0].keys, 0)
    assert scores.shape == (cache.layers[0].keys.shape[1], 48) and bool((scores > 0).all())


@dataclass
class _RecordingSurprisal(Surprisal):
    """The surprisal scorer, keeping what formation handed it for each window."""

    seen: list[torch.Tensor] = field(default_factory=list)

    def score(self, queries, keys, memory_len, surprisal=None, rerotate=None):
        if not self.seen or self.seen[-1] is not surprisal:
            self.seen.append(surprisal)
        return super().score(queries, keys, memory_len, surprisal, rerotate)


def test_surprisal_is_each_tokens_loss_in_the_full_document(tiny_lm):
    """Window by window over an uncompressed memory, it equals one plain forward pass's token losses."""
    ids = _ids(200, seed=3)
    recorder = _RecordingSurprisal()
    form_memory(tiny_lm, ids, beta=2, window=200, scorer=recorder)  # one window: the whole document
    whole = recorder.seen[0]
    logits = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]), reduction="none")
    assert whole.shape == (200,) and whole[0] == 0
    torch.testing.assert_close(whole[1:], expected, rtol=1e-4, atol=1e-4)
    # in windows, each window's first token is predicted from the one before it (across the window edge)
    recorder = _RecordingSurprisal()
    form_memory(tiny_lm, ids, beta=1, window=64, scorer=recorder)
    assert not recorder.seen  # beta 1 keeps everything and never asks
    from agent.memory.formation import token_surprisal

    hidden = tiny_lm.model.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    edge = token_surprisal(tiny_lm.model, hidden[64:128], torch.tensor(ids[64:128]), hidden[63:64])
    torch.testing.assert_close(edge, expected[63:127], rtol=1e-4, atol=1e-4)


def test_surprisal_keeps_a_planted_fact_that_attention_drops(real_lm):
    """A fact stated once in an essay stays in a beta-4 memory as a phrase, not as scattered subwords."""
    from agent.memory.formation import tokenize_document
    from tests.conftest import essays_text

    text = essays_text(6000)
    fact = "The access code for the north archive is 4721."
    ids = tokenize_document(real_lm, text[: len(text) // 2] + "\n" + fact + "\n" + text[len(text) // 2 :])
    fact_ids = tokenize_document(real_lm, " archive is 4721")
    at = next(i for i in range(len(ids)) if ids[i : i + len(fact_ids)] == fact_ids)
    span = set(range(at, at + len(fact_ids)))

    def kept_share(scorer: str) -> float:
        memory = form_memory(real_lm, ids, beta=4, window=512, scorer=scorer)
        return len(span & set(memory.token_indices[0, 0].tolist())) / len(span)

    assert kept_share("surprisal") == 1.0
    assert kept_share("snapkv") < 1.0
