"""Decoding and scoring after a memory, with the real bundled model."""

from __future__ import annotations

import pytest
import torch

from agent.chat import chat_prompt
from agent.memory.decoding import SamplingParams, continuation_logprob, generate, stream_generate
from agent.memory.formation import form_memory, tokenize_document
from store.errors import IncompatibleMemory
from tests.conftest import essays_text

FACT = "The access code for the north archive is 4721."


@pytest.fixture(scope="module")
def planted_memory(real_lm):
    text = essays_text(12000)
    third = len(text) // 3
    ids = tokenize_document(real_lm, text[:third] + "\n" + FACT + "\n" + text[third:])
    return form_memory(real_lm, ids, beta=2, window=1024)


def test_stop_strings_and_token_budget_hold(real_lm):
    prompt = chat_prompt(real_lm.tokenizer, "What is the capital of France?")
    full = generate(real_lm, None, prompt, SamplingParams(max_new_tokens=40))
    assert "Paris" in full
    text = generate(real_lm, None, prompt, SamplingParams(max_new_tokens=40, stop=["Paris", "paris"]))
    assert text and "Paris" not in text and full.startswith(text)
    short = generate(real_lm, None, prompt, SamplingParams(max_new_tokens=3))
    assert len(real_lm.tokenizer(short, add_special_tokens=False)["input_ids"]) <= 4


def test_sampling_is_reproducible_with_a_seed(real_lm):
    prompt = chat_prompt(real_lm.tokenizer, "Write one sentence about the sea.")
    params = SamplingParams(max_new_tokens=20, temperature=0.9, top_p=0.9, seed=7)
    assert generate(real_lm, None, prompt, params) == generate(real_lm, None, prompt, params)


def test_streamed_pieces_add_up_to_the_text(real_lm):
    prompt = chat_prompt(real_lm.tokenizer, "Name three colours.")
    pieces = list(stream_generate(real_lm, None, prompt, SamplingParams(max_new_tokens=16)))
    assert "".join(pieces) == generate(real_lm, None, prompt, SamplingParams(max_new_tokens=16))
    assert len(pieces) > 1


def test_continuation_logprob_matches_a_manual_forward(real_lm):
    tok = real_lm.tokenizer
    prompt = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    cont = tok(" Paris", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = real_lm.model(input_ids=torch.tensor([prompt + cont])).logits[0].float().log_softmax(-1)
    manual = sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))
    assert continuation_logprob(real_lm, None, prompt, cont) == pytest.approx(manual, abs=1e-3)
    wrong = tok(" Berlin", add_special_tokens=False)["input_ids"]
    assert continuation_logprob(real_lm, None, prompt, cont) > continuation_logprob(real_lm, None, prompt, wrong)


def test_memory_raises_the_planted_answer_likelihood(real_lm, planted_memory):
    prompt = chat_prompt(real_lm.tokenizer, "What is the access code for the north archive?")
    answer = real_lm.tokenizer(" 4721", add_special_tokens=False)["input_ids"]
    with_memory = continuation_logprob(real_lm, planted_memory, prompt, answer)
    without = continuation_logprob(real_lm, None, prompt, answer)
    assert with_memory > without + 1.0


def test_decoding_refuses_another_models_memory(tiny_lm, real_lm, planted_memory):
    with pytest.raises(IncompatibleMemory):
        generate(tiny_lm, planted_memory, [1, 2, 3], SamplingParams(max_new_tokens=2))
