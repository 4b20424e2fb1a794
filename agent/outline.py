"""Where a character stands in its document: the title and the heading path above it.

A sentence rarely repeats the name of what it describes ("If there is no
period in the last portion, an empty string is returned" sits under
"path.extname(path)"), so the reader scores each sentence together with the
headings above it. Markdown (``#`` headings and setext underlines) and
reStructuredText/plain-text underlined titles are recognised; a document with
no headings is titled by its first line.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
# A line of text underlined by a run of one punctuation character at least as long (RST, setext, plain text).
_UNDERLINED = re.compile(r"^([^\n]*\S[^\n]*)\n([=\-~^\"'`*+#])\2{2,}[ \t]*$", re.MULTILINE)
_CODE_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_MARKUP = re.compile(r"[`*_]+|<!--.*?-->|\[([^\]]*)\]\[[^\]]*\]")
MAX_HEADING = 120


@dataclass(frozen=True)
class Heading:
    start: int  # character where the heading line starts
    level: int  # 1 = title
    text: str


@dataclass(frozen=True)
class Outline:
    title: str
    headings: tuple[Heading, ...]

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
    levels: dict[str, int] = {}  # an underline character's level is the order it first appears in
    for m in _UNDERLINED.finditer(text):
        line = m.group(1).strip()
        if in_code(m.start()) or len(m.group(0).split("\n")[1].strip()) < len(line) or line.startswith(("#", "|")):
            continue
        level = levels.setdefault(m.group(2), len(levels) + 1)
        found.append(Heading(m.start(), level, _clean(line)))
    found = sorted((h for h in found if h.text), key=lambda h: h.start)
    if found and found[0].level == min(h.level for h in found):
        title = found[0].text
    else:
        title = _clean(next((line for line in text.splitlines() if line.strip()), ""))
    return Outline(title, tuple(found))
