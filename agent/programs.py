"""The SGLang programs of MemoRAG: clues from memory, answers from evidence.

Clue programs run on a ``LocalBackend`` bound to one document's memory, so
"the document above" is the compressed memory in the model's KV space.
Answer programs run on the generator. Every prompt lives in ``PROMPTS`` so
they can be tuned in one place; clue output is parsed by ``clean_lines``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import sglang as sgl

PROMPTS = {
    "recall_spans": (
        "From the document you have just read, copy word for word the sentences that help answer "
        "the question. Write one sentence per line and nothing else.\n\nQuestion: {question}"
    ),
    "surrogate_questions": (
        "The question below may be vague. Using what you know of the document you have just read, "
        "rewrite it as up to {n} precise questions whose answers can be found in that document. "
        "Write one question per line.\n\nQuestion: {question}"
    ),
    "draft_answer": (
        "Using only what you remember from the document you have just read, answer the question "
        "briefly.\n\nQuestion: {question}"
    ),
    "key_points": ("List the key points of the document you have just read, one short sentence per line."),
    "answer": (
        "Answer the question using only the evidence below. Be concise; if the evidence does not "
        "contain the answer, say so.\n\nEvidence:\n{evidence}\n\nQuestion: {question}"
    ),
    "short_answer": (
        "Answer the question using only the evidence below. Reply with the answer alone, in as few "
        "words as possible, and nothing else.\n\nEvidence:\n{evidence}\n\nQuestion: {question}"
    ),
    "summary": "Summarize the evidence below in a few sentences.\n\nEvidence:\n{evidence}",
}

CLUE_TOKENS = 160
ANSWER_TOKENS = 128
MAX_CLUES = 8
MIN_WORDS = 3


# A program's sampling temperature is named ``heat``: ``SglFunction.run`` takes a
# ``temperature`` keyword for itself and would never pass it to the program.
@sgl.function
def recall_spans(s, question: str, max_tokens: int = CLUE_TOKENS, heat: float = 0.0):
    s += sgl.user(PROMPTS["recall_spans"].format(question=question))
    s += sgl.assistant(sgl.gen("clues", max_tokens=max_tokens, temperature=heat))


@sgl.function
def surrogate_questions(s, question: str, n: int = 4, max_tokens: int = CLUE_TOKENS, heat: float = 0.0):
    s += sgl.user(PROMPTS["surrogate_questions"].format(question=question, n=n))
    s += sgl.assistant(sgl.gen("clues", max_tokens=max_tokens, temperature=heat))


@sgl.function
def draft_answer(s, question: str, max_tokens: int = ANSWER_TOKENS, heat: float = 0.0):
    s += sgl.user(PROMPTS["draft_answer"].format(question=question))
    s += sgl.assistant(sgl.gen("answer", max_tokens=max_tokens, temperature=heat))


@sgl.function
def key_points(s, max_tokens: int = CLUE_TOKENS, heat: float = 0.0):
    s += sgl.user(PROMPTS["key_points"])
    s += sgl.assistant(sgl.gen("clues", max_tokens=max_tokens, temperature=heat))


# The clue programs' token budgets: what their answers use on the sample and the
# essays, with room to spare (a span line is ~25 tokens, a question ~15).
CLUE_PARTS = {
    "spans": ("recall_spans", 128),
    "questions": ("surrogate_questions", 96),
    "draft": ("draft_answer", 64),
}


@sgl.function
def clues(s, question: str, parts: tuple[str, ...] = tuple(CLUE_PARTS), n: int = 4, heat: float = 0.0):
    """Several clue programs over the same memory, forked so a batching backend decodes them together."""
    branches = s.fork(len(parts))
    for i, part in enumerate(parts):
        prompt, tokens = CLUE_PARTS[part]
        branches[i] += sgl.user(PROMPTS[prompt].format(question=question, n=n))
        branches[i] += sgl.assistant(sgl.gen(part, max_tokens=tokens, temperature=heat))
    branches.join()
    failed = [branch.error() for branch in branches.states if branch.error()]
    if failed:  # a branch keeps its error to itself; the caller should see it
        raise failed[0]


@sgl.function
def answer(s, question: str, evidence: str, max_tokens: int = ANSWER_TOKENS):
    s += sgl.user(PROMPTS["answer"].format(question=question, evidence=evidence))
    s += sgl.assistant(sgl.gen("answer", max_tokens=max_tokens, temperature=0.0))


@sgl.function
def short_answer(s, question: str, evidence: str, max_tokens: int = ANSWER_TOKENS):
    """For short-answer benchmarks (LongBench asks for "only the answer" the same way)."""
    s += sgl.user(PROMPTS["short_answer"].format(question=question, evidence=evidence))
    s += sgl.assistant(sgl.gen("answer", max_tokens=max_tokens, temperature=0.0))


@sgl.function
def summary(s, evidence: str, max_tokens: int = 2 * ANSWER_TOKENS):
    s += sgl.user(PROMPTS["summary"].format(evidence=evidence))
    s += sgl.assistant(sgl.gen("answer", max_tokens=max_tokens, temperature=0.0))


_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,2}[.)]|[a-zA-Z][.)](?=\s))\s*")
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def clean_lines(
    text: str, question: str | None = None, *, min_words: int = MIN_WORDS, limit: int = MAX_CLUES
) -> list[str]:
    """Clue output as a clean list: no bullets, short, repeated or question-echo lines."""
    asked = set(_words(question or ""))
    seen: set[tuple[str, ...]] = set()
    kept: list[str] = []
    for raw in text.splitlines():
        line = _BULLET.sub("", raw).strip().strip('"').strip()
        words = _words(line)
        if len(words) < min_words:
            continue
        key = tuple(words)
        if key in seen:
            continue
        if asked and len(set(words) & asked) / len(set(words) | asked) >= 0.8:
            continue  # the question again, in other clothes
        seen.add(key)
        kept.append(line)
        if len(kept) >= limit:
            break
    return kept


def execute(program, backend, **arguments):
    """Run one program on ``backend``; its error, if any, is raised instead of kept in the state."""
    state = program.run(backend=backend, **arguments)
    if state.error():
        raise state.error()
    return state


def format_evidence(passages: Sequence[str]) -> str:
    return "\n\n".join(f"[{i + 1}] {p.strip()}" for i, p in enumerate(passages))


@dataclass(frozen=True)
class Clues:
    """What the memory wrote for one question: evidence spans, sharper questions, a draft."""

    spans: list[str]
    questions: list[str]
    draft: str

    def hints(self) -> list[str]:
        """The clues other than the spans: sharper questions and the draft."""
        return [*self.questions, *([self.draft] if len(_words(self.draft)) >= MIN_WORDS else [])]

    def quote(self) -> str:
        """The spans as one quote, a line each (``retrieve(spans=...)`` takes one per memory)."""
        return "\n".join(self.spans)


def write_spans(backend, question: str, *, temperature: float = 0.0, adapter: bool = True) -> list[str]:
    """The evidence spans the memory recalls for ``question``.

    They are what RLGF trains, so they are written with the clue adapter when
    one is loaded (``adapter=False`` forces the base model).
    """
    if hasattr(backend, "with_adapter"):
        backend = backend.with_adapter(adapter)
    return clean_lines(execute(recall_spans, backend, question=question, heat=temperature)["clues"], question)


def write_hints(backend, question: str, *, temperature: float = 0.0) -> tuple[list[str], str]:
    """Sharper questions and a draft answer, from the base model (no adapter)."""
    written = _write_together(backend, question, ("questions", "draft"), temperature)
    return clean_lines(written["questions"], question), written["draft"].strip()


def write_clues(backend, question: str, *, temperature: float = 0.0, adapter: bool = True) -> Clues:
    """The three clue programs on a memory-bound backend: spans (see ``write_spans``), questions, draft.

    On the local backend they decode as one batch over the memory (``clues``);
    spans leave the batch only when a trained adapter writes them (the hints
    stay the base model's).
    """
    if adapter and getattr(backend, "has_adapter", lambda: False)():
        spans = write_spans(backend, question, temperature=temperature)
        questions, draft = write_hints(backend, question, temperature=temperature)
        return Clues(spans=spans, questions=questions, draft=draft)
    written = _write_together(backend, question, ("spans", "questions", "draft"), temperature)
    return Clues(
        spans=clean_lines(written["spans"], question),
        questions=clean_lines(written["questions"], question),
        draft=written["draft"].strip(),
    )


def _write_together(backend, question: str, parts: tuple[str, ...], temperature: float) -> dict[str, str]:
    """Run the ``clues`` program for ``parts``, batched when the backend can decode branches together."""
    if hasattr(backend, "with_adapter"):
        backend = backend.with_adapter(False)
    if hasattr(backend, "batched"):
        backend = backend.batched(len(parts))
    state = execute(clues, backend, question=question, parts=parts, heat=temperature)
    return {part: state[part][0] for part in parts}
