"""Chunking at natural boundaries, real embeddings, and fused multi-query retrieval."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agent.retrieval import Fusion, chunk_document, get_embedder, retrieve
from store.vectors import EmbeddedIndex

TRANSCRIPT = "\n".join(
    f"Speaker {i % 3}: " + " ".join(f"We discussed item {i} and the budget for part {j}." for j in range(4))
    for i in range(30)
)


@pytest.fixture(scope="module")
def embedder():
    return get_embedder()


def test_chunks_respect_size_boundaries_and_spans(real_lm):
    tok = real_lm.tokenizer
    chunks = chunk_document("doc", TRANSCRIPT, tok, target_tokens=120, overlap_tokens=30)
    assert len(chunks) > 5
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.token_end - c.token_start <= 120
        assert TRANSCRIPT[c.char_start : c.char_end] == c.text  # exact: citations quote these characters
    no_overlap = chunk_document("doc", TRANSCRIPT, tok, target_tokens=120, overlap_tokens=0)
    assert all(c.text.startswith("Speaker") for c in no_overlap)  # cut at speaker turns
    ids = tok(TRANSCRIPT, add_special_tokens=False)["input_ids"]
    assert chunks[-1].token_end == len(ids)
    # together the chunks cover every token, and move forward
    assert all(b.token_start <= a.token_end for a, b in itertools.pairwise(chunks))
    assert all(b.token_start > a.token_start for a, b in itertools.pairwise(chunks))
    # a budget that holds a whole trailing turn repeats it at the start of the next chunk
    overlapping = chunk_document("doc", TRANSCRIPT, tok, target_tokens=120, overlap_tokens=60)
    assert any(b.token_start < a.token_end for a, b in itertools.pairwise(overlapping))


def test_a_long_sentence_is_cut_by_tokens(real_lm):
    text = "word " * 1000
    chunks = chunk_document("doc", text, real_lm.tokenizer, target_tokens=100, overlap_tokens=0)
    assert all(c.token_end - c.token_start <= 100 for c in chunks)
    assert sum(c.token_end - c.token_start for c in chunks) == len(real_lm.tokenizer(text)["input_ids"])


def test_embeddings_are_normalized_and_semantic(embedder):
    vectors = embedder.encode(["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Tax law reform."])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_clues_pull_in_evidence_the_question_misses(redis_client, embedder, real_lm):
    from store.vectors import Chunk

    texts = [
        "The committee agreed to move the product launch to March.",
        "Lunch options were sandwiches and soup.",
        "The remote control prototype will use a rubber casing.",
        "Marketing asked for a yellow colour scheme for the remote.",
        "The budget for the remote is twelve and a half euros.",
    ]
    chunks = [Chunk("meeting", i, t, 0, 0, i, i + 1) for i, t in enumerate(texts)]
    index = EmbeddedIndex(redis_client)
    index.upsert("kb", chunks, embedder.encode(texts))
    question = "What did they decide about the design?"
    clues = ["The prototype will use a rubber casing.", "What colour scheme did marketing ask for?"]
    with_clues = retrieve(index, embedder, "kb", question, clues, k=3, depth=2)
    assert {2, 3} <= {e.chunk.ordinal for e in with_clues}
    assert [e.chunk.ordinal for e in with_clues] == sorted(e.chunk.ordinal for e in with_clues)  # document order
    assert all(e.matched_by for e in with_clues)
    assert any(set(e.matched_by) - {0} for e in with_clues)  # found by a clue
    plain = retrieve(index, embedder, "kb", question, k=3, depth=3)
    assert len(plain) == 3 and all(e.matched_by == (0,) for e in plain)


DESIGN_MEETING = [
    "The committee agreed to move the product launch to March.",
    "Lunch options were sandwiches and soup.",
    "The remote control prototype will use a rubber casing.",
    "Marketing asked for a yellow colour scheme for the remote.",
    "The budget for the remote is twelve and a half euros.",
    "The tax office changed the reporting rules for freelancers.",
    "Football results from the weekend were discussed at length.",
]


@pytest.fixture
def design_index(redis_client, embedder):
    from store.vectors import Chunk

    chunks = [Chunk("meeting", i, t, 0, 0, i, i + 1) for i, t in enumerate(DESIGN_MEETING)]
    index = EmbeddedIndex(redis_client)
    index.upsert("kb", chunks, embedder.encode(DESIGN_MEETING))
    return index


def test_off_topic_clues_cannot_outvote_the_question(design_index, embedder):
    question = "What budget was set for the remote control?"
    best = retrieve(design_index, embedder, "kb", question, k=1)[0].chunk.ordinal
    assert best == 4
    drifting = [
        "Tax reporting rules for freelancers changed.",
        "The tax office changed its rules.",
        "New tax rules for freelancers.",
        "Weekend football results.",
        "Football results were discussed.",
        "The weekend's football scores.",
    ]
    one_vote_each = retrieve(design_index, embedder, "kb", question, drifting, k=2, depth=2, fusion=Fusion())
    assert best not in {e.chunk.ordinal for e in one_vote_each}  # why per-clue votes are not the default
    default = retrieve(design_index, embedder, "kb", question, drifting, k=2, depth=2)
    assert best in {e.chunk.ordinal for e in default}


@pytest.mark.parametrize(
    "fusion", [Fusion(clue_share=1.0, anchored=True, pool=10), "anchored_share1", Fusion(rocchio=0.5)]
)
def test_an_on_topic_clue_still_reaches_evidence_the_question_ranks_low(design_index, embedder, fusion):
    question = "What did they decide about the casing?"
    plain = {e.chunk.ordinal for e in retrieve(design_index, embedder, "kb", question, k=2)}
    assert 3 not in plain
    clues = ["Marketing asked for a yellow colour scheme."]
    with_clue = {e.chunk.ordinal for e in retrieve(design_index, embedder, "kb", question, clues, k=2, fusion=fusion)}
    assert 3 in with_clue


def test_a_pooled_fusion_only_reorders_what_the_question_found(design_index, embedder):
    question = "What budget was set for the remote control?"
    pool = [h.chunk.ordinal for h in retrieve(design_index, embedder, "kb", question, k=3)]
    drifting = ["Tax reporting rules for freelancers changed.", "Weekend football results."]
    unpooled = {
        e.chunk.ordinal for e in retrieve(design_index, embedder, "kb", question, drifting, k=3, fusion=Fusion())
    }
    assert unpooled - set(pool)  # per-clue votes pull in chunks the question never ranked
    pooled = retrieve(design_index, embedder, "kb", question, drifting, k=3, fusion=Fusion(pool=3))
    assert {e.chunk.ordinal for e in pooled} <= set(pool)


def test_evidence_orders_lay_the_same_passages_out_by_document_or_by_score(design_index, embedder):
    from agent.retrieval import order_evidence

    question = "What budget was set for the remote control?"
    found = retrieve(design_index, embedder, "kb", question, k=4)
    by_score = sorted(found, key=lambda e: e.score)
    assert [e.chunk.ordinal for e in found] == sorted(e.chunk.ordinal for e in found)  # retrieve: document order
    assert order_evidence(found, "best-last")[-1].chunk.ordinal == 4 == by_score[-1].chunk.ordinal
    assert order_evidence(found, "best-first") == by_score[::-1]
    assert order_evidence(by_score, "document") == found
    with pytest.raises(ValueError, match="unknown evidence order"):
        order_evidence(found, "random")


def test_spans_without_their_own_share_are_clues_like_the_others(design_index, embedder):
    question = "What did they decide about the casing?"
    lines = ["Marketing asked for a yellow colour scheme.", "The remote uses a rubber casing."]
    hints = ["What material is the prototype made of?"]
    as_clues = retrieve(design_index, embedder, "kb", question, [*lines, *hints], k=3)
    as_quote = retrieve(design_index, embedder, "kb", question, hints, spans=["\n".join(lines)], k=3)
    assert as_quote == as_clues


def test_a_quote_with_its_own_share_is_not_outvoted_by_drifting_hints(design_index, embedder):
    question = "What did they decide about the casing?"
    quote = ["Marketing asked for a yellow colour scheme."]  # the evidence is chunk 3
    drifting = [
        "Tax reporting rules for freelancers changed.",
        "The tax office changed its rules.",
        "New tax rules for freelancers.",
        "Weekend football results.",
        "Football results were discussed.",
        "The weekend's football scores.",
    ]

    def rank_of_evidence(fusion: str | Fusion) -> int:
        found = retrieve(design_index, embedder, "kb", question, drifting, spans=quote, k=7, fusion=fusion)
        return [e.chunk.ordinal for e in sorted(found, key=lambda e: -e.score)].index(3)

    shared = rank_of_evidence("anchored_share1")  # the quote is one of seven clues sharing one weight
    assert shared >= 3
    quoted_apart = Fusion(clue_share=1.0, anchored=True, span_share=1.0)
    assert rank_of_evidence(quoted_apart) < shared
    assert rank_of_evidence(quoted_apart) < 3
