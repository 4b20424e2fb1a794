"""Loaders for long-document QA data, in the public formats (any path).

Each loader yields ``Sample``s: one long document and its questions, with
gold answers and, where the format has them, gold evidence as character
spans of the document. ``load_needle`` builds its own: essays as a haystack
with known facts planted at spread depths.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Question:
    text: str
    answers: list[str]
    evidence: list[tuple[int, int]] = field(default_factory=list)  # character spans
    split: str = ""  # "dev" (thresholds are chosen there) or "test" (reported); "" where the set has none
    doc: str | None = None  # the document that answers it, when the set names one (None: off-topic)


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


def load_kbqa(path: str | Path, limit: int | None = None) -> Iterator[Sample]:
    """A knowledge-base set: ``documents`` (id + path, relative to the file, ``.gz`` read as text) and
    ``questions`` (``q``, ``answers``, ``doc``: the answering document, or null for an off-topic one).

    Each document's answerable questions alternate dev/test, and so do the off-topic ones, which come last
    as a sample with no text (they belong to no document).
    """
    path = Path(path)
    spec = json.loads(path.read_text())
    documents = spec["documents"][:limit] if limit else spec["documents"]
    by_doc: dict[str | None, list[Question]] = {d["id"]: [] for d in documents}
    by_doc[None] = []
    for q in spec["questions"]:
        if q["doc"] in by_doc:
            group = by_doc[q["doc"]]
            split = ("dev", "test")[len(group) % 2]
            group.append(Question(q["q"], list(q["answers"]), split=split, doc=q["doc"]))
    for d in documents:
        yield Sample(d["id"], _read_text(path.parent / d["path"]), by_doc[d["id"]])
    yield Sample("", "", by_doc[None])


def load_longmemeval(path: str | Path, limit: int | None = None) -> Iterator[Sample]:
    """LongMemEval's JSON (a list of questions, each with ``haystack_sessions`` of ``{role, content}`` turns
    and ``haystack_dates``): each distinct haystack is one document, its sessions headed by their dates.

    Gold evidence is the turns marked ``has_answer``, else the whole of the ``answer_session_ids`` sessions.
    """
    items = json.loads(Path(path).read_text())
    haystacks: dict[tuple, list[dict]] = {}
    for item in items:
        haystacks.setdefault(tuple(item["haystack_session_ids"]), []).append(item)
    for n, (ids, asked) in enumerate(haystacks.items()):
        if limit is not None and n >= limit:
            return
        first = asked[0]
        parts, cursor = [], 0
        turns: dict[str, list[tuple[int, int, bool]]] = {}  # session id -> (start, end, has_answer) per turn
        for session_id, date, session in zip(ids, first["haystack_dates"], first["haystack_sessions"], strict=True):
            header = f"Session {len(turns) + 1} ({date})\n\n"
            parts.append(header)
            cursor += len(header)
            spans = turns.setdefault(session_id, [])
            for turn in session:
                piece = f"{turn['role'].capitalize()}: {' '.join(turn['content'].split())}\n\n"
                parts.append(piece)
                spans.append((cursor, cursor + len(piece) - 2, bool(turn.get("has_answer"))))
                cursor += len(piece)
        questions = []
        for item in asked:
            marked = [(s, e) for sid in item["answer_session_ids"] for s, e, has in turns.get(sid, []) if has]
            whole = [(t[0][0], t[-1][1]) for sid in item["answer_session_ids"] if (t := turns.get(sid))]
            questions.append(Question(item["question"], [str(item["answer"])], marked or whole))
        yield Sample(f"chat-{n}", "".join(parts), questions)


def _read_text(where: Path) -> str:
    try:
        return gzip.decompress(where.read_bytes()).decode() if where.suffix == ".gz" else where.read_text()
    except FileNotFoundError as exc:
        why = "document not found (the set reads documents where they are installed)"
        raise FileNotFoundError(2, why, str(where)) from exc


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


@dataclass(frozen=True)
class Needle:
    """A fact to plant in a haystack, its question, answer, and wrong answers to rank against."""

    statement: str
    question: str
    answer: str
    distractors: tuple[str, ...]


NEEDLES = [
    Needle(
        "The access code for the north archive is 4721.",
        "What is the access code for the north archive?",
        "4721",
        ("3816", "9054", "2267", "6139", "7408", "1592", "8375", "5643", "3920"),
    ),
    Needle(
        "The ferry to Lindholm leaves at 7:45 every morning.",
        "When does the ferry to Lindholm leave?",
        "7:45",
        ("6:15", "8:30", "9:10", "5:50", "10:20", "11:05", "6:40", "8:55", "7:05"),
    ),
    Needle(
        "Marta's favourite instrument is the bassoon.",
        "What is Marta's favourite instrument?",
        "the bassoon",
        (
            "the violin",
            "the harp",
            "the trumpet",
            "the cello",
            "the oboe",
            "the drums",
            "the flute",
            "the piano",
            "the clarinet",
        ),
    ),
    Needle(
        "The blue warehouse stores exactly 380 bicycles.",
        "How many bicycles does the blue warehouse store?",
        "380",
        ("120", "945", "610", "275", "830", "455", "190", "720", "560"),
    ),
    Needle(
        "The village of Ostrava Minor was founded in 1742.",
        "When was the village of Ostrava Minor founded?",
        "1742",
        ("1815", "1690", "1903", "1777", "1654", "1866", "1721", "1598", "1930"),
    ),
    Needle(
        "The password for the greenhouse terminal is heron.",
        "What is the password for the greenhouse terminal?",
        "heron",
        ("falcon", "otter", "maple", "comet", "willow", "badger", "quartz", "ember", "lynx"),
    ),
    Needle(
        "Doctor Ilse Varga keeps her spare key under the red flowerpot.",
        "Where does Doctor Ilse Varga keep her spare key?",
        "under the red flowerpot",
        (
            "in the mailbox",
            "above the door",
            "in her coat",
            "under the doormat",
            "in the garage",
            "behind the clock",
            "in a drawer",
            "under the bench",
            "in the shed",
        ),
    ),
    Needle(
        "The night train from Ravel to Somme costs 64 euros.",
        "How much does the night train from Ravel to Somme cost?",
        "64 euros",
        ("12 euros", "99 euros", "37 euros", "150 euros", "48 euros", "75 euros", "23 euros", "81 euros", "56 euros"),
    ),
    Needle(
        "The lighthouse on Cape Morrow is painted green.",
        "What colour is the lighthouse on Cape Morrow?",
        "green",
        ("red", "white", "yellow", "blue", "black", "orange", "purple", "grey", "brown"),
    ),
    Needle(
        "The chess club meets every Thursday in room 18.",
        "In which room does the chess club meet?",
        "room 18",
        ("room 4", "room 31", "room 9", "room 42", "room 7", "room 26", "room 12", "room 55", "room 3"),
    ),
]


def load_needle(path: str | Path, limit: int | None = None, *, words: int = 6000, facts: int = 5) -> Iterator[Sample]:
    """Haystacks of about ``words`` words from a folder of essays, each with ``facts`` planted facts.

    Haystack ``n`` starts at the ``n``-th essay, so each one differs; a fact
    goes between paragraphs at depths from 10% to 90%, and its span is the
    gold evidence.
    """
    folder = Path(path)
    files = sorted((folder / "essays" if (folder / "essays").is_dir() else folder).glob("*.txt"))
    if not files:
        raise ValueError(f"no essays (*.txt) under {folder}")
    planted = NEEDLES[: max(1, min(facts, len(NEEDLES)))]
    for n in range(len(files) if limit is None else min(limit, len(files))):
        paragraphs: list[str] = []
        count, i = 0, n
        while count < words:
            for paragraph in files[i % len(files)].read_text().split("\n\n"):
                if paragraph.strip() and count < words:
                    paragraphs.append(paragraph.strip())
                    count += len(paragraph.split())
            i += 1
        depths = [int(len(paragraphs) * (0.1 + 0.8 * j / max(1, len(planted) - 1))) for j in range(len(planted))]
        for depth, needle in reversed(list(zip(depths, planted, strict=True))):
            paragraphs.insert(depth, needle.statement)
        text, questions = "\n\n".join(paragraphs), []
        for needle in planted:
            at = text.index(needle.statement)
            questions.append(Question(needle.question, [needle.answer], [(at, at + len(needle.statement))]))
        yield Sample(f"needle-{n}", text, questions)
