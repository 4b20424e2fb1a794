"""Loaders for long-document QA data, in the public formats (any path).

Each loader yields ``Sample``s: one long document and its questions, with
gold answers and, where the format has them, gold evidence as character
spans of the document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Question:
    text: str
    answers: list[str]
    evidence: list[tuple[int, int]] = field(default_factory=list)  # character spans


@dataclass(frozen=True)
class Sample:
    doc_id: str
    text: str
    questions: list[Question]


def load_qmsum(path: str | Path, limit: int | None = None) -> Iterator[Sample]:
    """QMSum jsonl: ``meeting_transcripts`` turns and ``specific_query_list`` with turn spans."""
    with Path(path).open() as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            meeting = json.loads(line)
            parts, spans, cursor = [], [], 0
            for turn in meeting["meeting_transcripts"]:
                piece = f"{turn['speaker']}: {turn['content']}\n"
                parts.append(piece)
                spans.append((cursor, cursor + len(piece) - 1))
                cursor += len(piece)
            questions = []
            for q in meeting.get("specific_query_list", []):
                evidence = []
                for start, end in q.get("relevant_text_span", []):
                    first, last = int(start), min(int(end), len(spans) - 1)
                    if first <= last:
                        evidence.append((spans[first][0], spans[last][1]))
                questions.append(Question(q["query"], [q["answer"]], evidence))
            yield Sample(f"qmsum-{n}", "".join(parts), questions)


def load_leval(path: str | Path, limit: int | None = None) -> Iterator[Sample]:
    """L-Eval jsonl: one document per line in ``input``, questions in ``instructions``, answers in ``outputs``."""
    with Path(path).open() as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            item = json.loads(line)
            questions = [Question(q, [a]) for q, a in zip(item["instructions"], item["outputs"], strict=False)]
            yield Sample(f"leval-{n}", item["input"], questions)


def load_longbench(path: str | Path, limit: int | None = None) -> Iterator[Sample]:
    """LongBench predictions file: items with ``origin_prompt`` (context, then the last ``Question:``) and ``gold``."""
    items = json.loads(Path(path).read_text())
    for n, (key, item) in enumerate(items.items() if isinstance(items, dict) else enumerate(items)):
        if limit is not None and n >= limit:
            return
        context, question = split_longbench_prompt(item["origin_prompt"])
        gold = item["gold"] if isinstance(item["gold"], list) else [item["gold"]]
        yield Sample(f"longbench-{key}", context, [Question(question, [str(g) for g in gold])])


def split_longbench_prompt(prompt: str) -> tuple[str, str]:
    """(context, question) from LongBench's template: instruction, context, instruction again, question."""
    at = prompt.rfind("Question:")
    if at < 0:
        raise ValueError("a LongBench prompt needs a final 'Question:'")
    question = prompt[at + len("Question:") :].split("\nAnswer:")[0].strip()
    paragraphs = prompt[:at].strip().split("\n\n")
    if len(paragraphs) > 2 and paragraphs[0].strip() == paragraphs[-1].strip():
        paragraphs = paragraphs[1:-1]  # the instruction framing the context, not part of it
    return "\n\n".join(paragraphs).strip(), question
