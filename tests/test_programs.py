"""SGLang programs on the in-process backend, with the real bundled model."""

from __future__ import annotations

import pytest
import sglang as sgl

from agent import programs
from agent.backends import LocalBackend
from agent.memory.formation import form_memory, tokenize_document
from tests.conftest import essays_text

FACT = "The access code for the north archive is 4721."


@pytest.fixture(scope="module")
def backend(real_lm):
    return LocalBackend(real_lm)


@pytest.fixture(scope="module")
def memory_backend(real_lm, backend):
    text = essays_text(12000)
    third = len(text) // 3
    ids = tokenize_document(real_lm, text[:third] + "\n" + FACT + "\n" + text[third:])
    return LocalBackend(real_lm, form_memory(real_lm, ids, beta=2, window=1024))


def test_roles_render_exactly_as_the_tokenizer_template(backend, real_lm):
    @sgl.function
    def chat(s):
        s += sgl.system("Be brief.")
        s += sgl.user("hello")
        s += sgl.assistant("hi there")

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
    ]
    assert chat.run(backend=backend).text() == real_lm.tokenizer.apply_chat_template(messages, tokenize=False)

    @sgl.function
    def no_system(s):
        s += sgl.user("hello")

    expected = real_lm.tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False)
    assert no_system.run(backend=backend).text() == expected  # the template's own default system prompt


def test_clue_programs_return_clean_lists_from_memory(memory_backend):
    clues = programs.write_clues(memory_backend, "What is the access code for the north archive?")
    for line in clues.spans + clues.questions:
        assert len(line.split()) >= programs.MIN_WORDS
    assert len(set(clues.spans)) == len(clues.spans) <= programs.MAX_CLUES
    assert clues.spans or clues.questions
    assert isinstance(clues.draft, str) and clues.draft
    points = programs.key_points.run(max_tokens=60, backend=memory_backend)
    assert programs.clean_lines(points["clues"])


def test_answer_and_summary_programs_use_the_evidence(backend):
    evidence = programs.format_evidence(["The meeting moved to Friday at noon.", "Bring the budget sheets."])
    state = programs.answer.run(question="When is the meeting?", evidence=evidence, max_tokens=30, backend=backend)
    assert "friday" in state["answer"].lower()
    summary = programs.summary.run(evidence=evidence, max_tokens=40, backend=backend)
    assert summary["answer"].strip()


def test_stop_strings_hold(backend):
    @sgl.function
    def capital(s):
        s += sgl.user("What is the capital of France?")
        # greedy: sampled, the reply began with "Paris" now and then and left nothing to check
        s += sgl.assistant(sgl.gen("out", max_tokens=30, stop=["Paris"], temperature=0))

    out = capital.run(backend=backend)["out"]
    assert out and "Paris" not in out and out.startswith("The capital of France is")


def test_select_prefers_the_likelier_choice(backend):
    @sgl.function
    def pick(s):
        s += sgl.user("What is the capital of France?")
        s += sgl.assistant("The capital of France is " + sgl.select("city", choices=["Paris", "Zanzibar Qx"]))

    state = pick.run(backend=backend)
    assert state["city"] == "Paris"
    logprobs = state.get_meta_info("city")["normalized_prompt_logprobs"]
    assert logprobs[0] > logprobs[1]


def test_streaming_matches_non_streaming(backend):
    question = "Name three colours."
    plain = programs.draft_answer.run(question=question, max_tokens=24, backend=backend)["answer"]
    state = programs.draft_answer.run(question=question, max_tokens=24, backend=backend, stream=True)
    streamed = "".join(state.text_iter(var_name="answer"))
    assert streamed == plain


def test_run_batch_equals_sequential(backend):
    questions = [f"In one sentence, what is {w}?" for w in ("rain", "a cat", "bread", "music")]
    args = [{"question": q, "max_tokens": 16} for q in questions]
    batched = programs.draft_answer.run_batch(args, backend=backend, num_threads=4)
    sequential = [programs.draft_answer.run(**a, backend=backend) for a in args]
    assert [s["answer"] for s in batched] == [s["answer"] for s in sequential]


def test_memory_makes_the_planted_answer_likelier(memory_backend, backend):
    @sgl.function
    def code(s):
        s += sgl.user("What is the access code for the north archive?")
        s += sgl.assistant("The access code is " + sgl.select("code", choices=["4721", "3816", "9054", "2267"]))

    with_memory = code.run(backend=memory_backend).get_meta_info("code")["normalized_prompt_logprobs"][0]
    without = code.run(backend=backend).get_meta_info("code")["normalized_prompt_logprobs"][0]
    assert with_memory > without + 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "1. The cat sat on the mat.\n2. The cat sat on the mat.\n- ok\n\n* Dogs bark at night",
            ["The cat sat on the mat.", "Dogs bark at night"],
        ),
        ("What is the code of the archive?\nThe code is written on the door.", ["The code is written on the door."]),
    ],
)
def test_clean_lines(text, expected):
    assert programs.clean_lines(text, "What is the code of the archive?") == expected


def test_clean_lines_caps_the_count():
    text = "\n".join(f"line number {i} says something" for i in range(20))
    assert len(programs.clean_lines(text, limit=5)) == 5


def test_clues_decode_as_one_batch_and_write_what_they_would_write_one_by_one(memory_backend, monkeypatch):
    """The forked clue program meets in one batch over the memory, and greedy text is unchanged (fp32)."""
    from agent import backends

    question = "What is the access code for the north archive?"
    alone = {
        part: programs.execute(getattr(programs, name), memory_backend, question=question, max_tokens=tokens)
        for part, (name, tokens) in programs.CLUE_PARTS.items()
    }
    batches = []
    real = backends.generate_batch
    monkeypatch.setattr(
        backends,
        "generate_batch",
        lambda lm, memory, prompts, params: batches.append(len(prompts)) or real(lm, memory, prompts, params),
    )
    clues = programs.write_clues(memory_backend, question)
    assert batches == [3]
    assert clues.spans == programs.clean_lines(alone["spans"]["clues"], question)
    assert clues.questions == programs.clean_lines(alone["questions"]["clues"], question)
    assert clues.draft == alone["draft"]["answer"].strip()


def test_a_failed_batch_reaches_every_branch_instead_of_hanging(memory_backend, monkeypatch):
    from agent import backends

    def broken(*_):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(backends, "generate_batch", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        programs.write_clues(memory_backend, "Where is the archive?")
