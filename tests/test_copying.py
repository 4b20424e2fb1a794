"""Copy-constrained span writing: every line the memory writes is a verbatim run of the document."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from agent import programs
from agent.backends import LocalBackend
from agent.memory.copying import CopyConstraint, CopySource
from agent.memory.formation import form_memory, tokenize_document
from tests.conftest import _default_dir, essays_text

FACT = "The access code for the north archive is 4721."
SOURCE = (
    "The committee met on Tuesday to discuss the budget.\n"
    "Marketing asked for a larger share of the remote control design money.\n"
    "The industrial designer proposed a kinetic battery and a rubber case.\n"
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(_default_dir()))


def _sample(tokenizer, source: CopySource, steps: int, seed: int) -> list[int]:
    """Random logits through the constraint: whatever the model prefers, only copies come out."""
    rng = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id
    prompt = tokenizer("Copy the evidence.", add_special_tokens=False)["input_ids"]
    constraint = CopyConstraint(source, len(prompt), [eos])
    ids = list(prompt)
    for _ in range(steps):
        scores = constraint(torch.tensor([ids]), torch.randn(1, len(tokenizer), generator=rng))
        token = int(torch.multinomial(scores.softmax(-1), 1, generator=rng))
        if token == eos:
            break
        ids.append(token)
    return ids[len(prompt) :]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_line_is_a_verbatim_run_of_the_source(tokenizer, seed):
    source = CopySource(tokenizer, [SOURCE], min_span=3, max_span=8)
    produced = _sample(tokenizer, source, 80, seed)
    lines = [line for line in tokenizer.decode(produced).split("\n") if line.strip()]
    assert lines
    for line in lines:
        assert line.strip() in SOURCE
        assert len(tokenizer(line, add_special_tokens=False)["input_ids"]) <= 8


def test_no_run_of_the_source_is_copied_twice(tokenizer):
    source = CopySource(tokenizer, ["alpha beta gamma delta epsilon"], min_span=2, max_span=8)
    produced = _sample(tokenizer, source, 40, seed=3)
    words = tokenizer.decode(produced).split()
    assert len(words) == len(set(words)) <= 5  # each word of the source at most once


def test_spans_do_not_cross_line_breaks_or_documents(tokenizer):
    source = CopySource(tokenizer, ["one two three\nfour five six", "seven eight nine"], min_span=1, max_span=20)
    produced = _sample(tokenizer, source, 60, seed=4)
    for line in tokenizer.decode(produced).split("\n"):
        words = line.split()
        assert not ({"three", "four"} <= set(words) or {"six", "seven"} <= set(words))


@pytest.fixture(scope="module")
def planted(real_lm):
    text = essays_text(12000)
    third = len(text) // 3
    document = text[:third] + "\n" + FACT + "\n" + text[third:]
    return document, form_memory(real_lm, tokenize_document(real_lm, document), beta=4, window=1024)


def test_the_memory_copies_the_planted_fact_it_was_asked_for(real_lm, planted):
    document, memory = planted
    question = "What is the access code for the north archive?"
    source = CopySource(real_lm.tokenizer, [document])
    clues = programs.write_clues(LocalBackend(real_lm, memory), question, copy_from=source)
    assert clues.spans and all(span in document for span in clues.spans)
    assert any("4721" in span for span in clues.spans)
    free = programs.write_clues(LocalBackend(real_lm, memory), question)
    assert clues.questions == free.questions and clues.draft == free.draft  # only the spans are copied
