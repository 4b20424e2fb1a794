"""Calendar dates as people write them, read into one form.

A session header says "2023/05/20 (Sat) 02:21" and a user asks about "May 20,
2023" or "20 May 2023": the same day in words that share almost nothing. The
outline spells a header's date out so the embedding sees the words a question
uses, and the lexical index adds one exact term per day (``date20230520``) to
both the chunks and the question, whichever way each wrote it.
"""

from __future__ import annotations

import datetime as dt
import re

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
DATE = re.compile(
    rf"\b(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH},?\s+\d{{4}}|"
    rf"{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})\b",
    re.IGNORECASE,
)
_NUMERIC = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_MONTHS = {f"{dt.date(2000, m, 1):%b}".lower(): m for m in range(1, 13)}
_PARTS = re.compile(r"(\d{1,4})|([a-z]{3,})", re.IGNORECASE)


def parse(written: str) -> dt.date | None:
    """The day a ``DATE`` match names, or None where it names none (month 13, 31 February)."""
    try:
        numeric = _NUMERIC.fullmatch(written.strip())
        if numeric:
            year, month, day = (int(g) for g in numeric.groups())
            return dt.date(year, month, day)
        numbers = [int(n) for n, _ in _PARTS.findall(written) if n]
        words = [w.lower()[:3] for _, w in _PARTS.findall(written) if w and w.lower()[:3] in _MONTHS]
        if len(numbers) < 2 or not words:
            return None
        day, year = (numbers[0], numbers[-1]) if numbers[-1] > 31 else (numbers[-1], numbers[0])
        return dt.date(year, _MONTHS[words[0]], day)
    except ValueError:
        return None


def days(text: str) -> list[dt.date]:
    """Every day ``text`` names, in order."""
    return [d for m in DATE.finditer(text) if (d := parse(m.group(0))) is not None]


def spelled(day: dt.date) -> str:
    """``Saturday 20 May 2023``: the words a question about the day uses."""
    return f"{day:%A} {day.day} {day:%B %Y}"


def term(day: dt.date) -> str:
    """The one lexical term for the day, however it was written."""
    return f"date{day:%Y%m%d}"
