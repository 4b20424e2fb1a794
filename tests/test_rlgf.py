"""RLGF on a tiny random model: the loss, the pairs, training, the adapter slot and the gate."""

from __future__ import annotations

import math

import pytest
import torch

from agent import adapters, programs, rlgf
from agent.memory.decoding import token_logprobs
from agent.models import load_model
from agent.pipeline import memorize
from agent.retrieval import Fusion, chunk_document, get_embedder
from core.settings import Settings
from store.vectors import EmbeddedIndex
from tests.conftest import essays_text


def test_dpo_loss_matches_a_hand_computed_value():
    # margin = (-1 - -2) - (-3 - -2) = 2; beta 0.5 -> -log sigmoid(1) = log(1 + e^-1)
    loss = rlgf.dpo_loss(torch.tensor(-1.0), torch.tensor(-3.0), torch.tensor(-2.0), torch.tensor(-2.0), 0.5)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    # equal margins: log 2, whatever beta
    assert float(rlgf.dpo_loss(*(torch.tensor(0.0),) * 4, beta=3.0)) == pytest.approx(math.log(2), abs=1e-6)


def test_pairs_take_best_and_worst_above_the_margin():
    ex = rlgf.Example("d", "q?", "a")
    cands = [rlgf.Candidate(t, None, None, r) for t, r in (("low", 0.1), ("high", 0.5), ("mid", 0.3))]
    (pair,) = rlgf.make_pairs([(ex, cands)], margin=0.2)
    assert (pair.chosen, pair.rejected) == ("high", "low") and pair.gap == pytest.approx(0.4)
    assert rlgf.make_pairs([(ex, cands)], margin=0.4) == []  # the gap must exceed the margin
    assert rlgf.make_pairs([(ex, cands[:1])], margin=0.0) == []  # one candidate makes no pair
    same = [rlgf.Candidate("x", None, None, 1.0), rlgf.Candidate(" x ", None, None, 0.0)]
    assert rlgf.make_pairs([(ex, same)], margin=0.0) == []  # identical texts teach nothing


def test_gate_compares_recall_then_guards_the_answer_likelihood():
    current = {"recall@5": 0.40, "answer_loglik": -2.0}
    assert rlgf.gate({"recall@5": 0.45, "answer_loglik": -2.0}, current, margin=0.02).promote
    worse = rlgf.gate({"recall@5": 0.41, "answer_loglik": -2.0}, current, margin=0.02)
    assert not worse.promote and "margin" in worse.reason
    hurts = rlgf.gate({"recall@5": 0.50, "answer_loglik": -2.5}, current, margin=0.02)
    assert not hurts.promote and "log-likelihood" in hurts.reason
    no_spans = rlgf.gate({"answer_loglik": -1.8}, {"answer_loglik": -2.0}, margin=0.1)
    assert no_spans.promote


@pytest.fixture
def corpus(trainable_model_dir, redis_client):
    """Two essay documents, their memories and chunks, on a fresh tiny model (its own LoRA slot)."""
    lm = load_model(str(trainable_model_dir), dtype="fp32", device="cpu")
    index = EmbeddedIndex(redis_client, prefix="test-rlgf")
    docs = rlgf.Documents(lm, get_embedder(), index, k=2)
    settings = Settings(beta=8, window=256, scorer="snapkv")  # the memory this gate test was sized on
    texts = {"a": essays_text(3000), "b": essays_text(6000)[3000:]}
    for doc_id, text in texts.items():
        chunks = chunk_document(doc_id, text, lm.tokenizer, 128, 16)  # fewer chunks than the search depth
        index.upsert("kb", chunks, docs.embedder.encode([c.text for c in chunks]))
        docs.add(doc_id, "kb", memorize(lm, text, settings=settings), chunks)
    docs.texts = texts
    return docs


def _examples(corpus) -> list[rlgf.Example]:
    out = []
    for doc_id in corpus.texts:
        chunk = corpus.chunks(doc_id)[len(corpus.chunks(doc_id)) // 2]
        out.append(
            rlgf.Example(doc_id, "What does the essay say here?", "something", ((chunk.char_start, chunk.char_end),))
        )
    return out


def test_training_changes_the_adapter_reproducibly_and_resumes(corpus, tmp_path):
    examples = _examples(corpus)
    pairs = [
        rlgf.Pair(ex, corpus.texts[ex.doc_id][s:e], "nothing useful at all", 1.0)
        for ex in examples
        for s, e in ex.evidence
    ]
    config = rlgf.TrainConfig(steps=4, sft_steps=2, lr=1e-2, seed=3, checkpoint_every=2)
    sft = [(ex, rlgf.evidence_text(corpus.texts[ex.doc_id], ex)) for ex in examples]

    first = rlgf.train(corpus, pairs, config, sft=sft)
    trained = adapters.state(corpus.lm)
    assert first.steps == 6 and all(math.isfinite(x) for x in first.losses)
    assert any(float(w.abs().sum()) > 0 for n, w in trained.items() if "lora_B" in n)  # B started at zero

    again = rlgf.train(corpus, pairs, config, sft=sft)
    assert again.losses == pytest.approx(first.losses)
    assert all(torch.equal(trained[n], w) for n, w in adapters.state(corpus.lm).items())

    def interrupt(what, done, total):
        if done == 3:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "ckpt.safetensors"
    with pytest.raises(KeyboardInterrupt):
        rlgf.train(corpus, pairs, config, sft=sft, checkpoint=checkpoint, on_progress=interrupt)
    resumed = rlgf.train(corpus, pairs, config, sft=sft, checkpoint=checkpoint)
    assert resumed.resumed_from == 2 and resumed.steps == 6
    assert resumed.losses == pytest.approx(first.losses, rel=1e-4)
    for n, w in adapters.state(corpus.lm).items():
        assert torch.allclose(trained[n], w, atol=1e-5)


def test_the_slot_is_off_for_memories_and_answers_and_swaps_by_weights(corpus):
    lm, memory = corpus.lm, corpus.memory("a")
    prompt = rlgf.spans_prompt(lm, "What is this about?")
    before = token_logprobs(lm, memory, prompt, [42, 43])
    adapters.ensure_slot(lm)
    weights = {n: torch.randn_like(w) for n, w in adapters.state(lm).items()}
    adapters.load(lm, weights, "v1")
    assert adapters.loaded_version(lm) == "v1"
    assert token_logprobs(lm, memory, prompt, [42, 43]) == before  # off outside a clue backend
    with adapters.active(lm, True):
        changed = token_logprobs(lm, memory, prompt, [42, 43])
    assert changed != pytest.approx(before)
    data = adapters.to_bytes(adapters.state(lm), base_fingerprint=lm.fingerprint, spec=adapters.LoraSpec())
    loaded, spec, _ = adapters.from_bytes(data, base_fingerprint=lm.fingerprint)
    assert all(torch.equal(loaded[n], weights[n]) for n in weights) and spec == adapters.spec_of(lm)
    with pytest.raises(adapters.AdapterMismatch):
        adapters.from_bytes(data, base_fingerprint="another-model")
    adapters.clear(lm)
    assert adapters.loaded_version(lm) is None
    with adapters.active(lm, True):  # nothing loaded: the base model writes
        assert token_logprobs(lm, memory, prompt, [42, 43]) == before


def test_gate_promotes_an_adapter_that_quotes_the_evidence_and_refuses_a_misled_one(corpus):
    """A random model's other clues are noise, so retrieval here uses the trained spans alone, each
    with its own vote: a tiny random model learns only fragments of the evidence in 120 steps, too
    little to outweigh a question anchored into every clue (the pipeline's fusion)."""
    corpus.fusion = Fusion()  # one vote per clue
    examples = _examples(corpus)
    spans_alone = {example: [] for example in examples}  # no other clues: retrieval with the spans alone
    base = rlgf.evaluate(corpus, examples, adapter=False, loglik=False, hints=spans_alone)
    config = rlgf.TrainConfig(steps=0, sft_steps=120, lr=2e-2, seed=0)

    # Taught to quote each question's gold evidence: retrieval with its spans finds it.
    sft = [(ex, " ".join(rlgf.evidence_text(corpus.texts[ex.doc_id], ex).split()[:12])) for ex in examples]
    rlgf.train(corpus, [], config, sft=sft)
    adapters.mark(corpus.lm, "good")
    good = rlgf.evaluate(corpus, examples, adapter=True, loglik=False, hints=spans_alone)
    assert rlgf.gate(good, base, k=2, margin=0.1).promote, (good, base)

    # Taught the other document's evidence (shuffled targets): it points retrieval at the wrong place.
    misled = [(ex, text) for (ex, _), (_, text) in zip(sft, reversed(sft), strict=True)]
    rlgf.train(corpus, [], config, sft=misled)
    adapters.mark(corpus.lm, "bad")
    bad = rlgf.evaluate(corpus, examples, adapter=True, loglik=False, hints=spans_alone)
    decision = rlgf.gate(bad, good, k=2, margin=0.1)
    assert not decision.promote and "margin" in decision.reason, (bad, good)


def test_sampled_candidates_differ_from_each_other_and_repeat_for_a_seed(corpus):
    """Preference pairs need candidates that differ: a sampled clue program must really sample."""
    example = _examples(corpus)[0]
    sampled = rlgf.sample_candidates(corpus, example, 3, temperature=1.0, seed=5, max_tokens=12)
    assert len(set(sampled)) > 1
    assert rlgf.sample_candidates(corpus, example, 3, temperature=1.0, seed=5, max_tokens=12) == sampled
    greedy = rlgf.sample_candidates(corpus, example, 2, temperature=0.0, seed=5, max_tokens=12)
    assert greedy[0] == greedy[1]


def test_writers_compared_on_the_same_queries_share_the_base_models_other_clues(corpus, monkeypatch):
    """The gate compares two span writers; the sub-questions and draft come from the base model
    either way, so they are written once per query and both writers retrieve with the same ones."""
    examples = _examples(corpus)[:2]
    alone = rlgf.evaluate(corpus, examples, adapter=False, loglik=False)
    written = []
    real = programs.write_hints
    monkeypatch.setattr(programs, "write_hints", lambda *a, **kw: written.append(a[1]) or real(*a, **kw))
    hints: dict = {}
    assert rlgf.evaluate(corpus, examples, adapter=False, loglik=False, hints=hints) == alone
    rlgf.evaluate(corpus, examples, adapter=True, loglik=False, hints=hints)
    assert written == [e.question for e in examples] and set(hints) == set(examples)
