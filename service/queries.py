"""Questions: ask (queued at once), follow, read the answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from agent.choices import TASKS
from core.settings import get_settings
from service.bases import get_kb
from service.errors import Invalid, NotFound
from service.ids import parse_id, query_number
from service.stores import require_worker, task_progress
from store import db


@dataclass(frozen=True)
class Ticket:
    id: int
    public_id: str


def ask(kb_name: str, question: str, task: str = "memorag") -> Ticket:
    """Queue ``question`` for the knowledge base's ready documents; returns at once."""
    if not question.strip():
        raise Invalid("the question is empty")
    limit = get_settings().max_question_chars
    if len(question) > limit:
        raise Invalid(f"the question is {len(question)} characters; the limit is {limit} (MEMORAG_MAX_QUESTION_CHARS)")
    if task not in TASKS:
        raise Invalid(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    with db.session() as s:
        base = get_kb(s, kb_name)
        ready = db.ready_documents(s, base.id)
        docs = s.exec(select(db.Document).where(db.Document.kb_id == base.id)).all()
    if not ready:
        waiting = [f"{d.public_id} {d.name}" for d in docs if d.status in (db.Status.queued, db.Status.processing)]
        hint = (
            f"still processing: {', '.join(waiting)}"
            if waiting
            else f"add one with 'python manage.py ingest {kb_name} FILE'"
        )
        raise Invalid(f"{db.no_ready_documents(kb_name)} ({hint})")
    require_worker("query")
    with db.session() as s:
        query = db.Query(kb_id=base.id, text=question.strip(), task=task, task_id=uuid.uuid4().hex)
        s.add(query)
        s.flush()
        ticket, task_id = Ticket(query.id, query.public_id), query.task_id
    from workers.tasks import answer

    answer.apply_async(args=[ticket.id], task_id=task_id)  # after the commit: the worker reads the row
    return ticket


def existing_query(ident: str) -> int:
    number = query_number(ident)
    with db.session() as s:
        if s.get(db.Query, number) is None:
            raise NotFound(f"no query {ident}")
    return number


def query_status(query_id: int) -> str:
    with db.session() as s:
        return s.get(db.Query, query_id).status


@dataclass(frozen=True)
class Status:
    public_id: str
    status: str
    error: str | None = None
    progress: dict | None = None  # {"stage", "done", "total"} while a task reports it


def status(ident: str) -> Status:
    """Status of a document (d<number>) or a query (q<number>)."""
    kind, number = parse_id(ident)
    with db.session() as s:
        row = s.get(db.Document if kind == "d" else db.Query, number)
        if row is None:
            raise NotFound(f"no {'document' if kind == 'd' else 'query'} {kind}{number}")
        public, state, error, task_id = row.public_id, row.status, row.error, row.task_id
    progress = task_progress(task_id) if state == db.Status.processing else None
    return Status(public, state, error, progress)


@dataclass(frozen=True)
class Result:
    """A query and, once answered, its Answer row's fields (text, citation, evidence, timings...)."""

    public_id: str
    question: str
    task: str
    status: str
    error: str | None
    answer: dict[str, Any] | None = field(default=None)

    def record(self) -> dict[str, Any]:
        """The JSON record ``result --json`` prints and the API returns."""
        head = {"query": self.public_id, "question": self.question, "task": self.task, "status": self.status}
        return head | {"error": self.error} | (self.answer or {})


def result(query_id: int) -> Result:
    with db.session() as s:
        query = s.get(db.Query, query_id)
        if query is None:
            raise NotFound(f"no query q{query_id}")
        row = s.exec(select(db.Answer).where(db.Answer.query_id == query_id)).first()
        answer = None if row is None else row.model_dump(exclude={"id", "query_id", "created_at"})
        return Result(query.public_id, query.text, query.task, query.status, query.error, answer)
