"""Where a character stands in its document: the title and the heading path above it.

A sentence rarely repeats the name of what it describes ("If there is no
period in the last portion, an empty string is returned" sits under
"path.extname(path)"), so the reader scores each sentence together with the
headings above it. Markdown (``#`` headings and setext underlines) and
reStructuredText/plain-text underlined titles are recognised; a document with
no headings is titled by its first line. HTML headings (``<H2> Plot </H2>``, as in Natural
Questions' pages) count too. A short line that is mostly a date
("Session 3 (2023/05/20)", "DATE: 8 May, 2023") heads what follows it until the
next such line, as a conversation's session header does; it never titles.

``chunk_context`` is what a retrieved chunk carries of this (title, heading
path, the PDF page, the speaker of a turn it starts inside), so a question
that names a document, a section or a date finds the chunk that does not.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from core.dates import DATE, days, spelled

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
# A line of text underlined by a run of one punctuation character at least as long (RST, setext, plain text).
# The lookahead keeps it linear in a line's length: "[^\n]*\S[^\n]*" backtracked quadratically, and a page
# with one 200,000-character line took minutes to chunk.
_UNDERLINED = re.compile(r"^(?=[^\n]*\S)([^\n]+)\n([=\-~^\"'`*+#])\2{2,}[ \t]*$", re.MULTILINE)
_HTML = re.compile(r"<H([1-6])>\s*(.+?)\s*</H\1>", re.IGNORECASE | re.DOTALL)  # Natural Questions' pages
_CODE_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_MARKUP = re.compile(r"[`*_]+|<!--.*?-->|\[([^\]]*)\]\[[^\]]*\]")
MAX_HEADING = 120
DATE_LEVEL = 9  # below every Markdown or underlined level: a session date heads only its own session
# Words a session header holds beside its date: "Session 3", "DATE:", "(Sat) 02:21", "1:56 pm on".
_HEADER_WORDS = re.compile(
    r"\b(?:session|date|time|chat|conversation|on|at|am|pm|mon|tue|wed|thu|fri|sat|sun)[a-z]*\b|[\d:()\[\]#*,.\-/]+",
    re.IGNORECASE,
)
_LINE = re.compile(r"^[^\n]{4,80}$", re.MULTILINE)
_TURN = re.compile(r"^([A-Z][\w .'-]{0,40}):\s", re.MULTILINE)


@dataclass(frozen=True)
class Heading:
    start: int  # character where the heading line starts
    level: int  # 1 = title
    text: str


@dataclass(frozen=True)
class Outline:
    title: str
    headings: tuple[Heading, ...]
    titled: bool = True  # the title is a heading (not the first line)

    def path_at(self, char: int) -> tuple[str, ...]:
        """The headings that enclose ``char``, outermost first (the title is not repeated)."""
        starts = [h.start for h in self.headings]
        path: list[Heading] = []
        for heading in self.headings[: bisect.bisect_right(starts, char)]:
            path = [h for h in path if h.level < heading.level]
            path.append(heading)
        return tuple(h.text for h in path if h.text != self.title)

    def context_at(self, char: int) -> str:
        """``title > heading > subheading`` above ``char``: what the sentence there is about."""
        return " > ".join(part for part in (self.title, *self.path_at(char)) if part)


def _clean(text: str) -> str:
    return " ".join(_MARKUP.sub(lambda m: m.group(1) or "", text).split())[:MAX_HEADING]


def outline(text: str) -> Outline:
    """The document's title and headings, in order (code blocks are not searched)."""
    return _outline_cached(hashlib.sha1(text.encode()).hexdigest(), text)


@lru_cache(maxsize=256)
def _outline_cached(_digest: str, text: str) -> Outline:
    fenced = [m.span() for m in _CODE_FENCE.finditer(text)]

    def in_code(at: int) -> bool:
        return any(a <= at < b for a, b in fenced)

    found: list[Heading] = []
    for m in _ATX.finditer(text):
        if not in_code(m.start()):
            found.append(Heading(m.start(), len(m.group(1)), _clean(m.group(2))))
    for m in _HTML.finditer(text):
        if not in_code(m.start()):
            found.append(Heading(m.start(), int(m.group(1)), _clean(m.group(2))))
    levels: dict[str, int] = {}  # an underline character's level is the order it first appears in
    for m in _UNDERLINED.finditer(text):
        line = m.group(1).strip()
        if in_code(m.start()) or len(m.group(0).split("\n")[1].strip()) < len(line) or line.startswith(("#", "|")):
            continue
        level = levels.setdefault(m.group(2), len(levels) + 1)
        found.append(Heading(m.start(), level, _clean(line)))
    taken = {h.start for h in found}
    for m in _LINE.finditer(text):
        if m.start() not in taken and not in_code(m.start()) and _is_date_line(m.group(0)):
            line = _clean(m.group(0).strip().lstrip("#").strip())
            named = days(line)  # spelled out too: a question says "May 20, 2023", a header "2023/05/20"
            found.append(Heading(m.start(), DATE_LEVEL, f"{line}, {spelled(named[0])}" if named else line))
    found = sorted((h for h in found if h.text), key=lambda h: h.start)
    titled = [h for h in found if h.level < DATE_LEVEL]
    if titled and titled[0].level == min(h.level for h in titled):
        title = titled[0].text
    else:
        title = _clean(next((line for line in text.splitlines() if line.strip()), ""))
    return Outline(title, tuple(found), bool(titled))


def _is_date_line(line: str) -> bool:
    """A line that is a date and little else: a session header, not a sentence that mentions a date."""
    match = DATE.search(line)
    if match is None:
        return False
    rest = _HEADER_WORDS.sub(" ", line[: match.start()] + " " + line[match.end() :])
    return len(rest.split()) <= 1


def chunk_context(text: str, char: int, name: str = "", *, chunk_text: str = "") -> str:
    """What a chunk starting at ``char`` stands under: ``title > headings``, the PDF page, the turn's speaker.

    The title is the first heading, else ``name`` (the file's), else the first line. PDF pages are
    separated by form feeds (``agent.documents``). ``chunk_text``: the chunk itself, so a speaker it
    names at its start is not repeated.
    """
    where = outline(text)
    title = where.title if where.titled or not name else name
    parts = [title, *where.path_at(char)] if title else list(where.path_at(char))
    context = " > ".join(dict.fromkeys(p for p in parts if p))
    if "\f" in text:
        context += f" (page {text.count(chr(12), 0, char) + 1})"
    speaker = _speaker_at(text, char) if not _TURN.match(chunk_text) else ""
    if speaker:
        context += f" - {speaker}:"
    return context.strip()


def _speaker_at(text: str, char: int) -> str:
    """The speaker whose turn ``char`` falls inside, for a transcript (most of its lines are turns)."""
    turns = _turns(hashlib.sha1(text.encode()).hexdigest(), text)
    if not turns:
        return ""
    at = bisect.bisect_right([t[0] for t in turns], char) - 1
    return turns[at][1] if at >= 0 else ""


@lru_cache(maxsize=64)
def _turns(_digest: str, text: str) -> tuple[tuple[int, str], ...]:
    found = tuple((m.start(), m.group(1).strip()) for m in _TURN.finditer(text))
    lines = sum(1 for line in text.splitlines() if line.strip())
    return found if lines and len(found) >= 0.3 * lines else ()
