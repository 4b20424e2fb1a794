"""Knowledge bases: create, list, show, delete (with everything they hold)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam
from sqlmodel import Session, delete, func, select

from service.errors import Conflict, Invalid, NotFound
from service.stores import Stores
from store import db

KB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def get_kb(s: Session, name: str) -> db.KnowledgeBase:
    kb = s.exec(select(db.KnowledgeBase).where(db.KnowledgeBase.name == name)).first()
    if kb is None:
        raise NotFound(f"no knowledge base named {name!r} (see 'python manage.py kb list')")
    return kb


_KB_ID = select(db.KnowledgeBase.id).where(db.KnowledgeBase.name == bindparam("name"))


def kb_id(name: str) -> int | None:
    """The knowledge base's id, or None when there is none by that name."""
    found = db.read_one(_KB_ID, {"name": name})
    return None if found is None else found[0]


def owner_of(kind: str, number: int) -> int | None:
    """The knowledge base holding document (``kind`` "d") or query ("q") ``number``; None when there is none."""
    with db.session() as s:
        row = s.get(db.Document if kind == "d" else db.Query, number)
        return None if row is None else row.kb_id


def create_kb(name: str, description: str = "") -> None:
    if not KB_NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a valid name: use letters, digits, '.', '_' or '-' (64 at most)")
    with db.session() as s:
        if s.exec(select(db.KnowledgeBase).where(db.KnowledgeBase.name == name)).first():
            raise Conflict(f"knowledge base {name!r} already exists")
        s.add(db.KnowledgeBase(name=name, description=description))


def ensure_kb(name: str, description: str = "") -> int:
    """The knowledge base's id, creating it when missing."""
    with db.session() as s:
        base = s.exec(select(db.KnowledgeBase).where(db.KnowledgeBase.name == name)).first()
        if base is None:
            base = db.KnowledgeBase(name=name, description=description)
            s.add(base)
            s.flush()
        return base.id


@dataclass(frozen=True)
class KbSummary:
    id: int
    name: str
    description: str
    documents: dict[str, int] = field(default_factory=dict)  # status -> count


def list_kbs() -> list[KbSummary]:
    with db.session() as s:
        bases = s.exec(select(db.KnowledgeBase).order_by(db.KnowledgeBase.name)).all()
        counts = s.exec(
            select(db.Document.kb_id, db.Document.status, func.count()).group_by(db.Document.kb_id, db.Document.status)
        ).all()
    return [
        KbSummary(b.id, b.name, b.description, {str(st): n for kb_id, st, n in sorted(counts) if kb_id == b.id})
        for b in bases
    ]


@dataclass(frozen=True)
class KbDetail:
    name: str
    description: str
    created_at: datetime
    documents: int
    ready: int
    tokens: int
    memory_tokens: int
    queries: int


def show_kb(name: str) -> KbDetail:
    with db.session() as s:
        base = get_kb(s, name)
        docs = s.exec(select(db.Document).where(db.Document.kb_id == base.id)).all()
        queries = s.exec(select(func.count()).select_from(db.Query).where(db.Query.kb_id == base.id)).one()
    ready = [d for d in docs if d.status in db.ANSWERABLE]
    return KbDetail(
        base.name,
        base.description,
        base.created_at,
        len(docs),
        len(ready),
        sum(d.token_count or 0 for d in ready),
        sum(d.memory_tokens or 0 for d in ready),
        queries,
    )


def document_count(name: str) -> int:
    with db.session() as s:
        base = get_kb(s, name)
        return s.exec(select(func.count()).select_from(db.Document).where(db.Document.kb_id == base.id)).one()


def delete_kb(name: str, stores: Stores | None = None) -> int:
    """Delete the knowledge base with its memories, chunks, documents, queries, feedback and API keys; returns
    documents."""
    stores = stores or Stores()
    with db.session() as s:
        base = get_kb(s, name)
        doc_ids = s.exec(select(db.Document.id).where(db.Document.kb_id == base.id)).all()
    for doc_id in doc_ids:
        stores.memories.delete(name, f"d{doc_id}")
    stores.index.drop(name)
    with db.session() as s:
        query_ids = select(db.Query.id).where(db.Query.kb_id == base.id)
        s.exec(delete(db.Feedback).where(db.Feedback.query_id.in_(query_ids)))
        s.exec(delete(db.WebhookDelivery).where(db.WebhookDelivery.query_id.in_(query_ids)))
        s.exec(delete(db.Answer).where(db.Answer.query_id.in_(query_ids)))
        s.exec(delete(db.Query).where(db.Query.kb_id == base.id))
        s.exec(delete(db.Document).where(db.Document.kb_id == base.id))
        s.exec(delete(db.ApiKey).where(db.ApiKey.kb_id == base.id))  # a key of a knowledge base that is gone
        s.exec(delete(db.KnowledgeBase).where(db.KnowledgeBase.id == base.id))
    return len(doc_ids)
