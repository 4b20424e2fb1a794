"""Who is asking, and what of theirs they may touch: keys, roles, and 404 for anything not theirs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path

from api.errors import Denied, Unauthenticated
from service import NotFound, bases, keys
from store import db


def principal(
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> keys.Principal:
    token = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
    if not token:
        raise Unauthenticated("an API key is needed: 'Authorization: Bearer <key>' (manage.py keys create)")
    found = keys.authenticate(token)
    if found is None:
        raise Unauthenticated("the API key is wrong or revoked")
    return found


Key = Annotated[keys.Principal, Depends(principal)]
RowId = Annotated[int, Path(ge=1, le=db.MAX_ROW_ID, description="the number in d12 or q7")]


def kb_id_for(who: keys.Principal, name: str, role: str) -> int:
    """The knowledge base's id if ``who`` sees it (else 404, as for one that does not exist) and has ``role``."""
    with db.session() as s:
        try:
            kb_id = bases.get_kb(s, name).id
        except NotFound:
            kb_id = None
    if kb_id is None or not who.sees(kb_id):
        raise NotFound(f"no knowledge base named {name!r}")
    if not who.may(role):
        raise Denied(f"a {who.role} key may not do this; it needs a {role} key")
    return kb_id


def owned(who: keys.Principal, model, number: int, label: str, role: str):
    """The row (a Document or Query) if ``who`` sees its knowledge base and has ``role``; else 404 / 403."""
    with db.session() as s:
        row = s.get(model, number)
        kb_id = None if row is None else row.kb_id
    if kb_id is None or not who.sees(kb_id):
        raise NotFound(f"no {label} {number}")
    if not who.may(role):
        raise Denied(f"a {who.role} key may not do this; it needs a {role} key")
    return row


def operator(who: keys.Principal, what: str = "manage adapters") -> None:
    """What spans knowledge bases (creating them, adapters) needs an admin key for all of them."""
    if not (who.kb_id is None and who.may("admin")):
        raise Denied(f"only an admin key for every knowledge base may {what}")
