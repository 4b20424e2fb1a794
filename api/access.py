"""Who is asking, and what of theirs they may touch: keys, roles, and 404 for anything not theirs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path

from api.errors import Denied, Unauthenticated
from service import Invalid, NotFound, bases, keys
from service.ids import parse_id


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
_KINDS = {"d": "document", "q": "query"}


def _number(value: str, kind: str) -> int:
    """The row number of an id as printed (``d12``) or bare (``12``, as clients written before ids had letters)."""
    found, number = parse_id(value if value[:1].isalpha() else f"{kind}{value}")
    if found != kind:
        raise Invalid(f"{value} is a {_KINDS[found]} id; this path takes a {_KINDS[kind]} ({kind}<number>)")
    if number < 1:
        raise NotFound(f"no {_KINDS[kind]} {value}")
    return number


def _document_number(
    doc_id: Annotated[str, Path(description="the document's id as printed (d12), or its number", examples=["d12"])],
) -> int:
    return _number(doc_id, "d")


def _query_number(
    query_id: Annotated[str, Path(description="the query's id as printed (q7), or its number (7)", examples=["q7"])],
) -> int:
    return _number(query_id, "q")


DocNumber = Annotated[int, Depends(_document_number)]
QueryNumber = Annotated[int, Depends(_query_number)]


def kb_id_for(who: keys.Principal, name: str, role: str) -> int:
    """The knowledge base's id if ``who`` sees it (else 404, as for one that does not exist) and has ``role``."""
    kb_id = bases.kb_id(name)
    if kb_id is None or not who.sees(kb_id):
        raise NotFound(f"no knowledge base named {name!r}")
    if not who.may(role):
        raise Denied(f"a {who.role} key may not do this; it needs a {role} key")
    return kb_id


def owned(who: keys.Principal, kind: str, number: int, role: str) -> None:
    """Pass if ``who`` sees the knowledge base of document ("d") or query ("q") ``number`` and has ``role``;
    else 404 (as for one that does not exist) or 403."""
    kb_id = bases.owner_of(kind, number)
    if kb_id is None or not who.sees(kb_id):
        raise NotFound(f"no {_KINDS[kind]} {kind}{number}")
    if not who.may(role):
        raise Denied(f"a {who.role} key may not do this; it needs a {role} key")


def operator(who: keys.Principal, what: str = "manage adapters") -> None:
    """What spans knowledge bases (creating them, adapters) needs an admin key for all of them."""
    if not (who.kb_id is None and who.may("admin")):
        raise Denied(f"only an admin key for every knowledge base may {what}")
