"""The memory points at evidence: the question's attention over a memory, summed by the chunk each slot came
from; and the pointing re-ranks what the question found without adding to it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from agent.memory.formation import form_memory
from agent.memory.pointing import Heads, chunk_attention, chunk_scores, load_heads, slots_per_chunk
from agent.memory.scorers import SINK_TOKENS
from agent.retrieval import retrieve
from tests.test_retrieval import DESIGN_MEETING, design_index, embedder  # noqa: F401 (fixtures)


def _ids(n: int) -> list[int]:
    return torch.randint(100, 20000, (n,), generator=torch.Generator().manual_seed(3)).tolist()


SPANS = [(0, 100), (90, 200), (200, 300), (300, 400)]  # overlapping, as chunks are


def test_each_head_shares_its_attention_over_the_chunks_its_slots_came_from(tiny_lm):
    memory = form_memory(tiny_lm, _ids(400), beta=4, window=128, scorer="keynorm")
    shares = chunk_attention(tiny_lm, memory, "Who built it?", SPANS)
    layers, kv_heads = memory.meta.num_layers, memory.meta.kv_heads
    assert shares.shape == (layers, kv_heads, len(SPANS))
    torch.testing.assert_close(shares.sum(dim=-1), torch.ones(layers, kv_heads))
    slots = slots_per_chunk(memory, SPANS)
    kept = memory.token_indices.long()
    assert slots.sum() == ((kept >= SINK_TOKENS) & (kept < 400)).sum()  # every slot but the sinks, once
    assert (shares[slots == 0] == 0).all()  # a chunk with no slot in a head gets none of its attention
    first = (kept[0, 0] >= 90) & (kept[0, 0] < 200)  # a token in the overlap counts for the later chunk
    assert slots[0, 0, 1] == first.sum()


def test_chosen_heads_score_alone_and_every_head_without_a_choice():
    shares = torch.zeros(2, 3, 4)
    shares[1, 2] = torch.tensor([0.1, 0.6, 0.2, 0.1])
    shares[0, 0] = torch.tensor([0.7, 0.1, 0.1, 0.1])
    chosen = chunk_scores(shares, Heads("m", ((1, 2),)))
    assert chosen.argmax() == 1
    assert chunk_scores(shares, None).argmax() == 0  # the mean of every head


def test_kept_heads_read_back_and_the_bundled_model_keeps_none(tmp_path, monkeypatch):
    from agent.memory import pointing

    assert load_heads("SmolLM2-135M-Instruct") is None  # its heads point at chance (docs/benchmarks.md)
    monkeypatch.setattr(pointing, "HEADS_DIR", tmp_path)
    kept = Heads("tiny", ((3, 1), (0, 2)), 0.5, "top 2 on a dev split")
    pointing.heads_file("tiny").write_text(kept.to_json())
    assert load_heads("tiny") == kept and load_heads("no-such-model") is None


def test_pointing_reorders_the_questions_pool_but_never_adds_to_it(design_index, embedder):  # noqa: F811
    question = "What budget was set for the remote control?"
    plain = retrieve(design_index, embedder, "kb", question, k=3, depth=4)
    pool = retrieve(design_index, embedder, "kb", question, k=4, depth=4)
    last = min(pool, key=lambda e: e.score).chunk.id
    outsider = next(
        f"meeting#{i}" for i in range(len(DESIGN_MEETING)) if f"meeting#{i}" not in {e.chunk.id for e in pool}
    )
    pointed = [outsider, last]  # the memory's favourite is not in the pool; its second is the pool's last
    moved = retrieve(design_index, embedder, "kb", question, k=3, depth=4, pointed=[pointed], pointed_weight=1.0)
    ids = {e.chunk.id for e in moved}
    assert outsider not in ids and last in ids and last not in {e.chunk.id for e in plain}
    unmoved = retrieve(design_index, embedder, "kb", question, k=3, depth=4, pointed=[pointed], pointed_weight=0.0)
    assert [e.chunk.id for e in unmoved] == [e.chunk.id for e in plain]


@pytest.mark.model
def test_a_memory_longer_than_the_read_span_does_not_point(real_lm):
    from agent.pipeline import point

    text = " ".join(DESIGN_MEETING) * 3
    memory = form_memory(real_lm, real_lm.tokenizer(text, add_special_tokens=False)["input_ids"], beta=4)
    heads = Heads(real_lm.name, ((3, 0), (20, 1)))
    ranked = point(real_lm, memory, "d1", "What budget was set?", lambda _: text, heads)
    assert sorted(ranked) == sorted(f"d1#{i}" for i in range(len(ranked))) and ranked
    short = replace(real_lm, read_span=len(memory) - 1)
    assert point(short, memory, "d1", "What budget was set?", lambda _: text, heads) == []
