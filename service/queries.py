"""Questions: ask (queued at once), follow, read the answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from agent.choices import TASKS
from core.callbacks import CallbackRefused, check_callback, parse_allowed
from core.settings import get_settings
from service.bases import get_kb
from service.errors import Invalid, NotFound, TooMany
from service.ids import parse_id, query_number
from service.stores import require_worker, send, task_progress
from store import db


@dataclass(frozen=True)
class Ticket:
    id: int
    public_id: str


def _check_question(question: str, task: str, where: str = "") -> None:
    if not question.strip():
        raise Invalid(f"{where}the question is empty")
    limit = get_settings().max_question_chars
    if len(question) > limit:
        raise Invalid(
            f"{where}the question is {len(question)} characters; the limit is {limit} (MEMORAG_MAX_QUESTION_CHARS)"
        )
    if task not in TASKS:
        raise Invalid(f"{where}unknown task {task!r}; choose one of {', '.join(TASKS)}")


def ask(
    kb_name: str, question: str, task: str = "memorag", *, callback_url: str | None = None, key_id: int | None = None
) -> Ticket:
    """Queue ``question`` for the knowledge base's ready documents; returns at once.

    ``callback_url``: POST the result there once done or failed, signed with key ``key_id``'s webhook secret.
    """
    return ask_many(kb_name, [(question, task)], callback_url=callback_url, key_id=key_id)[0]


def ask_many(
    kb_name: str, asked: list[tuple[str, str]], *, callback_url: str | None = None, key_id: int | None = None
) -> list[Ticket]:
    """Queue every (question, task) or none: each is checked, and the batch's size, before any is recorded."""
    settings = get_settings()
    if callback_url:
        try:
            callback_url = check_callback(callback_url, parse_allowed(settings.webhook_hosts))
        except CallbackRefused as exc:
            raise Invalid(f"callback_url: {exc}") from None
    limit = settings.max_batch
    if len(asked) > limit:
        raise TooMany(f"{len(asked)} questions in one batch; the limit is {limit} (MEMORAG_MAX_BATCH)")
    if not asked:
        raise Invalid("the batch holds no questions")
    for n, (question, task) in enumerate(asked, 1):
        _check_question(question, task, f"question {n}: " if len(asked) > 1 else "")
    kb_id = db.kb_with_ready_documents(kb_name)  # the common case in one lookup
    if kb_id is None:
        with db.session() as s:
            kb_id = get_kb(s, kb_name).id
            busy = (db.Status.queued, db.Status.processing)
            found = s.exec(select(db.Document.id, db.Document.name).where(
                db.Document.kb_id == kb_id, db.Document.status.in_(busy)).order_by(db.Document.id)).all()  # fmt: skip
        waiting = [f"d{number} {name}" for number, name in found]
        hint = (
            f"still processing: {', '.join(waiting)}"
            if waiting
            else f"add one with 'python manage.py ingest {kb_name} FILE'"
        )
        raise Invalid(f"{db.no_ready_documents(kb_name)} ({hint})")
    require_worker("query")
    with db.session() as s:
        rows = [
            db.Query(
                kb_id=kb_id, text=q.strip(), task=task, task_id=uuid.uuid4().hex, callback_url=callback_url or None,
                key_id=key_id,
            )
            for q, task in asked
        ]  # fmt: skip
        s.add_all(rows)
        s.flush()
        sent = [(Ticket(row.id, row.public_id), row.task_id) for row in rows]
    from workers.tasks import answer

    for ticket, task_id in sent:  # after the commit: the worker reads the row
        send(answer, ticket.public_id, args=[ticket.id], task_id=task_id)
    return [ticket for ticket, _ in sent]


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


@dataclass(frozen=True)
class HistoryPage:
    """Newest first; ``next_cursor`` (a query id) asks for the page after this one, None at the end."""

    queries: list[dict[str, Any]]
    next_cursor: str | None


def history(kb_name: str, *, status: str | None = None, limit: int = 20, cursor: str | None = None) -> HistoryPage:
    """The knowledge base's questions, newest first, each with its answer's text, citation and feedback."""
    known = [state.value for state in db.Status]
    if status is not None and status not in known:
        raise Invalid(f"unknown status {status!r}; choose one of {', '.join(known)}")
    if not 1 <= limit <= HISTORY_PAGE_MAX:
        raise Invalid(f"limit must be between 1 and {HISTORY_PAGE_MAX}")
    before = query_number(cursor) if cursor else None
    with db.session() as s:
        base = get_kb(s, kb_name)
        pick = select(db.Query).where(db.Query.kb_id == base.id)
        if status is not None:
            pick = pick.where(db.Query.status == status)
        if before is not None:
            pick = pick.where(db.Query.id < before)
        rows = s.exec(pick.order_by(db.Query.id.desc()).limit(limit + 1)).all()
        page = rows[:limit]
        ids = [q.id for q in page]
        answers = {a.query_id: a for a in s.exec(select(db.Answer).where(db.Answer.query_id.in_(ids))).all()}
        ratings: dict[int, list[dict[str, Any]]] = {}
        for f in s.exec(select(db.Feedback).where(db.Feedback.query_id.in_(ids)).order_by(db.Feedback.id)).all():
            ratings.setdefault(f.query_id, []).append(
                {"id": f.id, "good": f.rating > 0, "answer": f.corrected_answer, "comment": f.comment}
            )
        items = [_history_item(q, answers.get(q.id), ratings.get(q.id, [])) for q in page]
    return HistoryPage(items, page[-1].public_id if len(rows) > limit else None)


HISTORY_PAGE_MAX = 200


def _history_item(query: db.Query, answer: db.Answer | None, feedback: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": query.public_id,
        "question": query.text,
        "task": query.task,
        "status": query.status,
        "error": query.error,
        "asked_at": query.created_at.isoformat(),
        "finished_at": query.finished_at.isoformat() if query.finished_at else None,
        "answer": None if answer is None else answer.text,
        "supported": None if answer is None else answer.supported,
        "citation": None if answer is None else answer.citation,
        "feedback": feedback,
    }
