"""Public ids: ``d12`` is document 12, ``q7`` is query 7."""

from __future__ import annotations

import re

from service.errors import Invalid, NotFound
from store.db import MAX_ROW_ID

_ID = re.compile(r"([dqDQ])(\d+)")


def parse_id(value: str) -> tuple[str, int]:
    """``("d" | "q", number)``; raises Invalid for anything else."""
    match = _ID.fullmatch(value.strip())
    if not match:
        raise Invalid(f"{value!r} is not an id: use q<number> for a query or d<number> for a document")
    kind, number = match.group(1).lower(), int(match.group(2))
    if number > MAX_ROW_ID:
        raise NotFound(f"no {'document' if kind == 'd' else 'query'} {kind}{number}")
    return kind, number


def query_number(ident: str) -> int:
    kind, number = parse_id(ident)
    if kind != "q":
        raise Invalid(f"{ident} is a document; this command takes a query (q<number>)")
    return number


def document_number(ident: str) -> int:
    kind, number = parse_id(ident)
    if kind != "d":
        raise Invalid(f"{ident} is a query; remove takes a document (d<number>)")
    return number
