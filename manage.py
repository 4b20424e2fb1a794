#!/usr/bin/env python
"""memorag manager: the one entry point for people and scripts.

Every user-facing failure is one line on stderr with exit code 2.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
import uuid
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from agent.settings import get_settings

console = Console(stderr=True)
CLI_KB = "_cli"
MEMORY_SCORERS = ("snapkv", "spread", "keynorm", "surprisal")  # agent.memory.scorers.SCORERS, without torch
EVIDENCE_ORDERS = ("document", "best-last", "best-first")  # agent.retrieval.EVIDENCE_ORDERS, without numpy
USAGE_ERROR = 2


class Failure(click.ClickException):
    exit_code = USAGE_ERROR

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    from agent.documents import BadDocument
    from agent.memory.errors import MemoryProblem
    from agent.models import ModelUnavailable
    from store.adapters import AdapterNotFound
    from store.memories import MemoryNotFound
    from store.redis import StoreUnavailable

    return (BadDocument, MemoryProblem, ModelUnavailable, MemoryNotFound, AdapterNotFound, StoreUnavailable, ValueError)


class FriendlyGroup(click.Group):
    """Turn the project's own exceptions into one clear line, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except _known_errors() as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise Failure(str(message)) from exc


class LineProgress:
    """Progress for output that is not a terminal (logs, CI, nohup), where a live bar prints nothing
    until it ends: one plain line when a task's stage changes, otherwise at most every ``every`` s."""

    def __init__(self, every: float = 15.0) -> None:
        self.every = every
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        task = len(self.tasks)
        self.tasks[task] = {"description": description, "completed": 0, "total": total, "shown": 0.0}
        self._show(task)
        return task

    def update(self, task: int, *, description: str | None = None, completed: float | None = None,
               total: float | None = None, **_) -> None:  # fmt: skip
        state = self.tasks[task]
        changed = description is not None and _stage(description) != _stage(state["description"])
        for key, value in (("description", description), ("completed", completed), ("total", total)):
            if value is not None:
                state[key] = value
        if changed or time.monotonic() - state["shown"] >= self.every:
            self._show(task)

    def _show(self, task: int) -> None:
        state = self.tasks[task]
        state["shown"] = time.monotonic()
        count = f" {state['completed']:.0f}/{state['total']:.0f}" if state["total"] else ""
        console.print(f"{state['description']}{count}", highlight=False)


def _stage(description: str) -> str:
    """A description without its percentages: "memory 40%" and "memory 41%" are one stage."""
    return re.sub(r"\d+(\.\d+)?%", "%", description)


def progress() -> Progress | LineProgress:
    """A live bar on a terminal, plain progress lines anywhere else."""
    if not console.is_terminal:
        return LineProgress()
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@click.group(cls=FriendlyGroup)
def cli() -> None:
    """memorag: answer questions over long documents with a compressed global memory.

    Configuration comes from MEMORAG_* environment variables; nothing is
    needed for the embedded defaults (data under ~/.local/share/memorag).
    """


# services -------------------------------------------------------------------
@cli.command()
@click.option("--no-worker", is_flag=True, help="Start only the embedded Valkey, no background worker.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the worker is serving queues.")
def up(no_worker: bool, wait: bool) -> None:
    """Start the embedded Valkey and a background worker (a no-op for what already runs).

    Valkey keeps its data under MEMORAG_HOME/valkey; the worker logs to
    MEMORAG_HOME/logs/worker.log. With MEMORAG_REDIS_URL set, only the worker starts.
    """
    from store.redis import embedded_url, start_embedded
    from workers import local

    settings = get_settings()
    if settings.redis_url:
        click.echo(f"using Redis at {settings.redis_url} (MEMORAG_REDIS_URL)")
    else:
        running = embedded_url(settings)
        url = running or start_embedded(settings)
        click.echo(f"embedded Valkey {'already running' if running else 'started'} at {url}")
    if no_worker:
        return
    pid, started = local.start(settings)
    if not started:
        click.echo(f"worker already running (pid {pid})")
        return
    if wait:
        with console.status("starting the worker"):
            _wait_for_worker(settings, pid)
    click.echo(f"worker started (pid {pid}, log {local.log_file(settings)})")


def _wait_for_worker(settings, pid: int, timeout: float = 120.0) -> None:
    from workers import local
    from workers.app import QUEUES

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if local.running_pid(settings) is None:
            raise Failure(f"the worker exited at start; see {local.log_file(settings)}")
        if set(QUEUES) <= set(_live_queues()):
            return
        time.sleep(0.25)
    raise Failure(f"the worker did not come up in {timeout:.0f} s; see {local.log_file(settings)}")


@cli.command()
def down() -> None:
    """Stop the background worker (its current task finishes or is redelivered) and the embedded Valkey."""
    from store.redis import stop_embedded
    from workers import local

    settings = get_settings()
    click.echo("worker stopped" if local.stop(settings) else "no background worker was running")
    click.echo("embedded Valkey stopped" if stop_embedded(settings) else "embedded Valkey was not running")


@cli.command()
@click.option("-Q", "--queues", default="memory,query,train", show_default=True, help="Queues to serve.")
@click.option("--pool", type=click.Choice(["solo", "prefork"]), default="solo", show_default=True,
              help="solo: one process holds the model; prefork: one child per --concurrency.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("-n", "--hostname", default=None, help="Worker name (default memorag-PID@host).")
def worker(queues: str, pool: str, concurrency: int, loglevel: str, hostname: str | None) -> None:
    """Run a Celery worker in the foreground (Ctrl-C stops it after the current task)."""
    import os

    from workers.app import QUEUES, configure

    unknown = sorted(set(queues.split(",")) - set(QUEUES))
    if unknown:
        raise Failure(f"unknown queue(s) {', '.join(unknown)}; choose from {', '.join(QUEUES)}")
    app = configure()
    app.worker_main([
        "worker", f"--pool={pool}", f"--concurrency={concurrency}", f"--queues={queues}",
        f"--loglevel={loglevel}", f"--hostname={hostname or f'memorag-{os.getpid()}@%h'}", "--without-gossip",
        "--without-mingle",
    ])  # fmt: skip


@cli.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run Celery beat, which enqueues the periodic retraining (schedule state under MEMORAG_HOME/run)."""
    from workers.app import configure

    settings = get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    configure().Beat(loglevel=loglevel, schedule=str(settings.run_dir / "beat-schedule")).run()


def _live_queues() -> dict[str, list[str]]:
    from store.redis import connect
    from workers.liveness import live_queues

    return live_queues(connect(settings=get_settings()))


def _require_worker(queue: str) -> None:
    if not _live_queues().get(queue):
        raise Failure(
            f"no worker is serving the {queue!r} queue; start one in the background with 'python manage.py up' "
            "or in the foreground with 'python manage.py worker'"
        )


# models ---------------------------------------------------------------------
@cli.group(cls=FriendlyGroup)
def models() -> None:
    """Prepare and inspect the language models."""


@models.command("prepare")
def models_prepare() -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF to safetensors once (a re-run is a no-op)."""
    from agent.models import default_model_dir, fingerprint_dir, is_prepared, prepare_default_model

    settings = get_settings()
    if is_prepared(default_model_dir(settings)):
        click.echo(f"default model ready in {default_model_dir(settings)} (nothing to do)")
        return
    stages = ["reading GGUF weights", "building safetensors model", "writing safetensors", "done"]
    with progress() as bar:
        task = bar.add_task("preparing the default model", total=len(stages) - 1)

        def on_stage(stage: str) -> None:
            bar.update(task, description=stage, completed=stages.index(stage))

        path, _ = prepare_default_model(settings, on_stage=on_stage)
    click.echo(f"default model ready in {path} (fingerprint {fingerprint_dir(path)})")


# knowledge bases ----------------------------------------------------------------
KB_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def _kb(s, name: str):
    from sqlmodel import select

    from store.db import KnowledgeBase

    kb = s.exec(select(KnowledgeBase).where(KnowledgeBase.name == name)).first()
    if kb is None:
        raise Failure(f"no knowledge base named {name!r} (see 'python manage.py kb list')")
    return kb


def _parse_id(value: str) -> tuple[str, int]:
    import re

    match = re.fullmatch(r"([dqDQ])(\d+)", value.strip())
    if not match:
        raise Failure(f"{value!r} is not an id: use q<number> for a query or d<number> for a document")
    return match.group(1).lower(), int(match.group(2))


def _existing_query(ident: str) -> int:
    from store import db

    kind, number = _parse_id(ident)
    if kind != "q":
        raise Failure(f"{ident} is a document; this command takes a query (q<number>)")
    with db.session() as s:
        if s.get(db.Query, number) is None:
            raise Failure(f"no query {ident}")
    return number


@cli.group(cls=FriendlyGroup)
def kb() -> None:
    """Create, list, inspect and delete knowledge bases."""


@kb.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the knowledge base holds.")
def kb_create(name: str, description: str) -> None:
    """Create the knowledge base NAME (letters, digits, '.', '_', '-'; up to 64)."""
    import re

    from sqlmodel import select

    from store import db

    if not re.fullmatch(KB_NAME, name):
        raise Failure(f"{name!r} is not a valid name: use letters, digits, '.', '_' or '-' (64 at most)")
    with db.session() as s:
        if s.exec(select(db.KnowledgeBase).where(db.KnowledgeBase.name == name)).first():
            raise Failure(f"knowledge base {name!r} already exists")
        s.add(db.KnowledgeBase(name=name, description=description))
    click.echo(f"created knowledge base {name}")


@kb.command("list")
def kb_list() -> None:
    """Knowledge bases with their document counts by status."""
    from sqlmodel import func, select

    from store import db

    with db.session() as s:
        bases = s.exec(select(db.KnowledgeBase).order_by(db.KnowledgeBase.name)).all()
        counts = s.exec(select(db.Document.kb_id, db.Document.status, func.count()).group_by(
            db.Document.kb_id, db.Document.status)).all()  # fmt: skip
    if not bases:
        click.echo("no knowledge bases yet: python manage.py kb create NAME")
        return
    for base in bases:
        by_status = {status: n for kb_id, status, n in counts if kb_id == base.id}
        summary = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items())) or "empty"
        click.echo(f"{base.name}\t{summary}\t{base.description}")


@kb.command("show")
@click.argument("name")
def kb_show(name: str) -> None:
    """Details of the knowledge base NAME: documents, tokens, memories, queries."""
    from sqlmodel import func, select

    from store import db

    with db.session() as s:
        base = _kb(s, name)
        docs = s.exec(select(db.Document).where(db.Document.kb_id == base.id)).all()
        queries = s.exec(select(func.count()).select_from(db.Query).where(db.Query.kb_id == base.id)).one()
    ready = [d for d in docs if d.status == db.Status.ready]
    click.echo(f"{'name':>16}: {base.name}")
    click.echo(f"{'description':>16}: {base.description or '-'}")
    click.echo(f"{'created':>16}: {base.created_at:%Y-%m-%d %H:%M} UTC")
    click.echo(f"{'documents':>16}: {len(docs)} ({len(ready)} ready)")
    click.echo(f"{'tokens':>16}: {sum(d.token_count or 0 for d in ready)} in, "
               f"{sum(d.memory_tokens or 0 for d in ready)} in memory")  # fmt: skip
    click.echo(f"{'queries':>16}: {queries}")


@kb.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def kb_delete(name: str, yes: bool) -> None:
    """Delete the knowledge base NAME with its documents, memories, chunks, queries and feedback."""
    from sqlmodel import delete, select

    from store import db

    with db.session() as s:
        base = _kb(s, name)
        doc_ids = s.exec(select(db.Document.id).where(db.Document.kb_id == base.id)).all()
    if not yes and not click.confirm(f"delete {name!r} and its {len(doc_ids)} document(s)?", default=False):
        raise Failure("not deleted")
    stores = _Stores()
    for doc_id in doc_ids:
        stores.memories.delete(name, f"d{doc_id}")
    stores.index.drop(name)
    with db.session() as s:
        query_ids = select(db.Query.id).where(db.Query.kb_id == base.id)
        s.exec(delete(db.Feedback).where(db.Feedback.query_id.in_(query_ids)))
        s.exec(delete(db.Answer).where(db.Answer.query_id.in_(query_ids)))
        s.exec(delete(db.Query).where(db.Query.kb_id == base.id))
        s.exec(delete(db.Document).where(db.Document.kb_id == base.id))
        s.exec(delete(db.KnowledgeBase).where(db.KnowledgeBase.id == base.id))
    click.echo(f"deleted knowledge base {name} ({len(doc_ids)} document(s))")


# documents ------------------------------------------------------------------------
@cli.command()
@click.argument("kb_name", metavar="KB")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="Show progress until every document is ready.")
def ingest(kb_name: str, files: tuple[Path, ...], wait: bool) -> None:
    """Add FILES (plain text, Markdown or PDF) to the knowledge base KB.

    Each file becomes a document with its own memory; a file whose content the
    knowledge base already holds is not added twice. Prints document ids at once.
    """
    from agent.documents import read_document
    from store import db

    settings = get_settings()
    texts = [(path.name, read_document(path, settings.max_document_mb)) for path in files]  # all checked first
    with db.session() as s:
        base = _kb(s, kb_name)
    _require_worker("memory")
    queued = _queue_documents(base.id, kb_name, texts)
    if wait and queued:
        _follow_ingestion(queued)


def _content_hash(text: str) -> str:
    """What makes two documents of a knowledge base the same document."""
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _queue_documents(
    kb_id: int, kb_name: str, texts: list[tuple[str, str]], echo: bool = True
) -> list[tuple[int, str]]:
    """Add (name, text) documents to a knowledge base and send their ingestion; returns those not yet ready.

    A text the knowledge base already holds is not added twice (one still queued
    is sent again: the job is idempotent, a lost message is not).
    """
    from sqlmodel import select

    from store import db
    from workers.tasks import ingest as ingest_task

    queued: list[tuple[int, str]] = []
    resend: list[tuple[int, str]] = []
    for name, text in texts:
        digest = _content_hash(text)
        with db.session() as s:
            doc = s.exec(
                select(db.Document).where(db.Document.kb_id == kb_id, db.Document.content_hash == digest)
            ).first()
            if doc is not None and doc.status != db.Status.failed:
                if echo:
                    click.echo(f"{doc.public_id}\t{name}\talready in {kb_name} as {doc.name} ({doc.status})")
                if doc.status == db.Status.queued:
                    doc.task_id = uuid.uuid4().hex
                    resend.append((doc.id, doc.task_id))
                if doc.status != db.Status.ready:
                    queued.append((doc.id, name))
                continue
            doc = doc or db.Document(kb_id=kb_id, name=name, text=text, content_hash=digest)
            doc.status, doc.error = db.Status.queued, None
            doc.task_id = uuid.uuid4().hex
            s.add(doc)
            s.flush()
            resend.append((doc.id, doc.task_id))
        queued.append((doc.id, name))
        if echo:
            click.echo(f"d{doc.id}\t{name}\tqueued")
    for doc_id, task_id in resend:  # only after the rows are committed, or a fast worker finds none
        ingest_task.apply_async(args=[doc_id], task_id=task_id)
    return queued


def _follow_ingestion(docs: list[tuple[int, str]]) -> None:
    from celery.result import AsyncResult

    from store import db
    from workers.app import configure

    app = configure()
    failed: list[str] = []
    with progress() as bar:
        tasks = {doc_id: bar.add_task(f"d{doc_id} {name}: queued", total=None) for doc_id, name in docs}
        pending = dict(tasks)
        while pending:
            for doc_id, task in list(pending.items()):
                with db.session() as s:
                    doc = s.get(db.Document, doc_id)
                if doc is None or doc.status in (db.Status.ready, db.Status.failed):
                    status = "deleted" if doc is None else doc.status
                    total = (doc.token_count if doc else None) or 1
                    bar.update(task, description=f"d{doc_id} {doc.name if doc else ''}: {status}", completed=total,
                               total=total)  # fmt: skip
                    if doc is None or doc.status == db.Status.failed:
                        failed.append(f"d{doc_id}: {doc.error if doc else 'deleted'}")
                    del pending[doc_id]
                    continue
                info = AsyncResult(doc.task_id, app=app).info if doc.task_id else None
                if isinstance(info, dict) and "stage" in info:
                    bar.update(task, description=f"d{doc_id} {doc.name}: {info['stage']}", completed=info["done"],
                               total=info["total"] or None)  # fmt: skip
                else:
                    bar.update(task, description=f"d{doc_id} {doc.name}: {doc.status}")
            time.sleep(0.3)
    if failed:
        raise Failure("ingestion failed for " + "; ".join(failed))


@cli.command()
@click.argument("kb_name", metavar="KB")
def docs(kb_name: str) -> None:
    """The documents of KB with status, tokens and memory size."""
    from sqlmodel import select

    from store import db

    with db.session() as s:
        base = _kb(s, kb_name)
        rows = s.exec(select(db.Document).where(db.Document.kb_id == base.id).order_by(db.Document.id)).all()
    if not rows:
        click.echo(f"{kb_name} has no documents: python manage.py ingest {kb_name} FILE...")
    for d in rows:
        sizes = (
            f"{d.token_count} tokens -> {d.memory_tokens} memory tokens, {d.chunk_count} chunks"
            if d.token_count
            else ""
        )
        click.echo(f"{d.public_id}\t{d.status}\t{d.name}\t{sizes}{d.error or ''}")


@cli.command()
@click.argument("ident", metavar="ID")
def remove(ident: str) -> None:
    """Remove document ID (d<number>) from its knowledge base: its row, chunks and memory."""
    from store import db

    kind, number = _parse_id(ident)
    if kind != "d":
        raise Failure(f"{ident} is a query; remove takes a document (d<number>)")
    with db.session() as s:
        doc = s.get(db.Document, number)
        if doc is None:
            raise Failure(f"no document {ident}")
        base = s.get(db.KnowledgeBase, doc.kb_id)
    stores = _Stores()
    stores.memories.delete(base.name, doc.public_id)
    chunks = stores.index.delete_document(base.name, doc.public_id)
    with db.session() as s:
        s.delete(s.get(db.Document, number))
    click.echo(f"removed {ident} ({doc.name}, {chunks} chunks) from {base.name}")


# questions --------------------------------------------------------------------------
@cli.command()
@click.argument("kb_name", metavar="KB")
@click.argument("question")
@click.option(
    "--task",
    type=click.Choice(["qa", "memorag", "summarize"]),
    default="memorag",
    show_default=True,
    help="qa: memory alone; memorag: memory clues -> retrieval -> answer; summarize: key points -> summary.",
)
@click.option("--wait", is_flag=True, help="Wait for the answer and print it with its citation and evidence.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --wait: the whole answer record).")
@click.option("--show-clues", is_flag=True, help="With --wait: also print the clues the memories wrote.")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds --wait waits.")
def ask(kb_name: str, question: str, task: str, wait: bool, as_json: bool, show_clues: bool, timeout: float) -> None:
    """Ask QUESTION about the knowledge base KB; prints the query id at once."""
    import json

    from sqlmodel import select

    from store import db
    from workers.tasks import answer as answer_task

    if not question.strip():
        raise Failure("the question is empty")
    with db.session() as s:
        base = _kb(s, kb_name)
        docs = s.exec(select(db.Document).where(db.Document.kb_id == base.id)).all()
    if not any(d.status == db.Status.ready for d in docs):
        waiting = [f"{d.public_id} {d.name}" for d in docs if d.status in (db.Status.queued, db.Status.processing)]
        hint = (f"still processing: {', '.join(waiting)}" if waiting
                else f"add one with 'python manage.py ingest {kb_name} FILE'")  # fmt: skip
        raise Failure(f"knowledge base {kb_name!r} has no ready documents ({hint})")
    _require_worker("query")
    with db.session() as s:
        query = db.Query(kb_id=base.id, text=question.strip(), task=task, task_id=uuid.uuid4().hex)
        s.add(query)
        s.flush()
        public = query.public_id
    answer_task.apply_async(args=[query.id], task_id=query.task_id)  # after the commit: the worker reads the row
    if not wait:
        click.echo(json.dumps({"query": public, "status": "queued"}) if as_json else public)
        return
    if not as_json:
        click.echo(public)
    with console.status(f"{public}: reading memories, writing clues, retrieving, answering"):
        deadline = time.monotonic() + timeout
        while _query_status(query.id) in (db.Status.queued, db.Status.processing):
            if time.monotonic() > deadline:
                raise Failure(
                    f"{public} is still running after {timeout:.0f} s; see 'python manage.py result {public}'"
                )
            time.sleep(0.2)
    _print_result(query.id, as_json, show_clues=show_clues)


def _query_status(query_id: int) -> str:
    from store import db

    with db.session() as s:
        return s.get(db.Query, query_id).status


def _print_result(query_id: int, as_json: bool, *, show_clues: bool = False) -> None:
    import json

    from sqlmodel import select

    from store import db

    with db.session() as s:
        query = s.get(db.Query, query_id)
        row = s.exec(select(db.Answer).where(db.Answer.query_id == query_id)).first()
    if as_json:
        record = {"query": query.public_id, "question": query.text, "task": query.task, "status": query.status,
                  "error": query.error}  # fmt: skip
        if row is not None:
            record |= row.model_dump(exclude={"id", "query_id", "created_at"})
        click.echo(json.dumps(record, indent=2, default=str))
    elif row is None:
        raise Failure(f"{query.public_id} is {query.status}" + (f": {query.error}" if query.error else ""))
    else:
        click.echo(row.text or "(empty answer)")
        cited = row.citation
        if cited and row.supported:
            quote = " ".join(cited["quote"].split())
            click.echo(f"  source: \"{quote}\" ({cited['chunk_id']} {cited.get('document', '')}, "
                       f"chars {cited['char_start']}-{cited['char_end']})")  # fmt: skip
        elif row.supported is False and row.reason:
            click.echo(f"  not shown as an answer: {row.reason}")
        for e in row.evidence:
            snippet = " ".join(e["text"].split())[:200]
            click.echo(f"  evidence {e['doc_id']} {e['document']} #{e['ordinal']} "
                       f"(chars {e['char_start']}-{e['char_end']}): {snippet}")  # fmt: skip
        for clue in row.clues if show_clues else []:
            click.echo(f"  clue: {clue}")
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in row.timings.items())
        click.echo(f"  ({query.task}, {row.reader or 'generate'}; {stages}; model {row.model} {row.model_fingerprint}"
                   f"{'; adapter ' + row.adapter_version if row.adapter_version else ''})")  # fmt: skip
    if query.status == db.Status.failed:
        raise Failure(f"{query.public_id} failed: {query.error}")


@cli.command()
@click.argument("ident", metavar="ID")
def status(ident: str) -> None:
    """Status of a document (d<number>) or a query (q<number>)."""
    from celery.result import AsyncResult

    from store import db
    from workers.app import configure

    kind, number = _parse_id(ident)
    with db.session() as s:
        row = s.get(db.Document if kind == "d" else db.Query, number)
    if row is None:
        raise Failure(f"no {'document' if kind == 'd' else 'query'} {kind}{number}")
    line = f"{row.public_id}\t{row.status}"
    if row.status == db.Status.processing and row.task_id:
        info = AsyncResult(row.task_id, app=configure()).info
        if isinstance(info, dict) and "stage" in info:
            line += f"\t{info['stage']} {info['done']}/{info['total']} tokens"
    if row.error:
        line += f"\t{row.error}"
    click.echo(line)


@cli.command()
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The whole answer record as JSON.")
@click.option("--show-clues", is_flag=True, help="Also print the clues the memories wrote.")
def result(ident: str, as_json: bool, show_clues: bool) -> None:
    """The answer to query ID with its citation, evidence and timings."""
    _print_result(_existing_query(ident), as_json, show_clues=show_clues)


class FeedbackGroup(FriendlyGroup):
    """``feedback ID --good`` stays short: an id where a subcommand would be means ``feedback give``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["give", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=FeedbackGroup)
def feedback() -> None:
    """Rate answers (feedback ID --good|--bad [--answer TEXT]) or import labelled data; both retrain clues.

    \b
    python manage.py feedback q12 --bad --answer "They postponed it"
    python manage.py feedback import ../shared/data/qmsum/train.jsonl --format qmsum --kb meetings
    """


@feedback.command("give")
@click.argument("ident", metavar="ID")
@click.option("--good/--bad", "good", default=None, help="Was the answer right?")
@click.option("--answer", "corrected", default=None, help="The correct answer, when it was wrong.")
@click.option("--comment", default=None, help="Anything else worth keeping.")
def feedback_give(ident: str, good: bool | None, corrected: str | None, comment: str | None) -> None:
    """Rate the answer to query ID; ratings and corrections retrain the clue writer."""
    from store import db

    if good is None:
        raise Failure("say --good or --bad")
    number = _existing_query(ident)
    with db.session() as s:
        row = db.Feedback(query_id=number, rating=1 if good else -1, corrected_answer=corrected, comment=comment)
        s.add(row)
        s.flush()
        row_id = row.id
    click.echo(f"feedback {row_id} stored for {ident}")


@feedback.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["qmsum", "leval"]), required=True)
@click.option("--kb", "kb_name", required=True, help="Knowledge base to hold the documents (created if missing).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N documents.")
@click.option("--wait", is_flag=True, help="Show ingestion progress until every document is ready.")
def feedback_import(path: Path, fmt: str, kb_name: str, limit: int | None, wait: bool) -> None:
    """Seed KB's feedback from a labelled dataset: its documents are ingested, each question becomes a
    query with its gold answer (and gold evidence spans, where the format has them) as a correction.
    Importing the same file again adds nothing twice."""
    from sqlmodel import select

    from agent.evaluation import load_samples
    from store import db

    samples = load_samples(fmt, path, limit)
    with db.session() as s:
        base = s.exec(select(db.KnowledgeBase).where(db.KnowledgeBase.name == kb_name)).first()
        if base is None:
            base = db.KnowledgeBase(name=kb_name, description=f"imported from {path.name}")
            s.add(base)
            s.flush()
    _require_worker("memory")
    queued = _queue_documents(base.id, kb_name, [(f"{x.doc_id}.txt", x.text) for x in samples], echo=False)
    added = skipped = 0
    for sample in samples:
        with db.session() as s:
            doc = s.exec(
                select(db.Document).where(
                    db.Document.kb_id == base.id, db.Document.content_hash == _content_hash(sample.text)
                )
            ).one()
            for q in sample.questions:
                known = s.exec(
                    select(db.Feedback.id).join(db.Query, db.Feedback.query_id == db.Query.id)
                    .where(db.Query.kb_id == base.id, db.Query.text == q.text, db.Feedback.source == fmt)
                ).first()  # fmt: skip
                if known is not None:
                    skipped += 1
                    continue
                query = db.Query(kb_id=base.id, text=q.text, status=db.Status.done)
                s.add(query)
                s.flush()
                spans = [{"document": doc.id, "start": a, "end": b} for a, b in q.evidence]
                s.add(db.Feedback(query_id=query.id, rating=-1, corrected_answer=q.answers[0], source=fmt,
                                  evidence=spans))  # fmt: skip
                added += 1
    click.echo(f"{added} feedback rows imported into {kb_name} ({skipped} already there), "
               f"{len(samples)} documents ({len(queued)} being ingested)")  # fmt: skip
    if wait and queued:
        _follow_ingestion(queued)


# training -------------------------------------------------------------------
@cli.command()
@click.option("--wait", is_flag=True, help="Follow the run and print its decision.")
@click.option("--force/--if-enough", default=True, show_default=True,
              help="Train now, or only once MEMORAG_RETRAIN_MIN_FEEDBACK new rows arrived (as beat does).")  # fmt: skip
def retrain(wait: bool, force: bool) -> None:
    """Retrain the clue writer from feedback now, on a worker serving the train queue."""
    from workers.app import configure
    from workers.tasks import retrain as retrain_task

    configure()
    _require_worker("train")
    handle = retrain_task.apply_async(kwargs={"force": force})
    click.echo(f"retraining sent (task {handle.id})")
    if not wait:
        click.echo("follow it with 'python manage.py adapters list'")
        return
    with progress() as bar:
        task = bar.add_task("queued", total=None)
        while not handle.ready():
            info = handle.info
            if isinstance(info, dict) and "stage" in info:
                bar.update(task, description=info["stage"], completed=info["done"], total=info["total"] or None)
            time.sleep(0.5)
    if handle.failed():
        raise Failure(f"retraining failed: {handle.result}")
    outcome = handle.result
    if outcome.get("status") == "skipped":
        click.echo(f"skipped: {outcome['new_feedback']} new feedback rows, {outcome['needed']} needed")
    else:
        click.echo(f"run {outcome['run']}: {outcome['version']} {outcome['decision']} ({outcome['reason']})")


@cli.group(cls=FriendlyGroup)
def adapters() -> None:
    """Clue-writer adapters trained from feedback: list, promote, roll back."""


def _registry():
    from store.adapters import AdapterRegistry
    from store.redis import connect

    return AdapterRegistry(connect(settings=get_settings()))


@adapters.command("list")
def adapters_list() -> None:
    """Every adapter version with its held-out metrics; * marks the promoted one."""
    registry = _registry()
    rows = registry.versions()
    if not rows:
        click.echo("no adapters yet: import or give feedback, then 'python manage.py retrain'")
        return
    for row in rows:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in row.metrics.items() if isinstance(v, float) and k != "n")
        click.echo(f"{'*' if row.promoted else ' '} {row.version}\t{row.created_at:%Y-%m-%d %H:%M}\t{metrics}")
    click.echo(f"promoted: {registry.promoted() or 'none (base model writes clues)'}")


@adapters.command("promote")
@click.argument("version")
def adapters_promote(version: str) -> None:
    """Make VERSION the clue adapter every worker uses from its next query."""
    _registry().promote(version)
    click.echo(f"promoted {version}")


@adapters.command("rollback")
def adapters_rollback() -> None:
    """Go back to the adapter promoted before the current one (or to none)."""
    now = _registry().rollback()
    click.echo(f"promoted: {now or 'none (base model writes clues)'}")


# evaluation -----------------------------------------------------------------
@cli.command("eval")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["qmsum", "leval", "longbench", "needle"]), required=True,
              help="qmsum/leval: jsonl; longbench: a predictions json; needle: a folder of essays.")  # fmt: skip
@click.option("--modes", default="rag,memorag,qa,full", show_default=True,
              help="Comma-separated: rag (question-only retrieval), memorag (memory clues + retrieval), "
                   "qa (memory alone), full (whole document, cut in the middle to fit).")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N documents.")
@click.option("--questions", type=click.IntRange(1), default=None, help="At most N questions per document.")
@click.option("--beta", type=click.IntRange(1, 64), default=None, help="Memory compression [MEMORAG_BETA].")
@click.option("--k", type=click.IntRange(1, 50), default=None, help="Chunks retrieved [MEMORAG_TOP_K].")
@click.option("--answer-tokens", type=click.IntRange(1, 1024), default=None,
              help="Longest answer (default: 128 for qmsum, 32 for needle, 64 otherwise).")  # fmt: skip
@click.option("--fusion", default=None, metavar="NAME",
              help="How memorag fuses the question and its clues (default: the pipeline's; names in "
                   "agent/retrieval.py FUSIONS).")  # fmt: skip
@click.option("--evidence-order", type=click.Choice(EVIDENCE_ORDERS), default="document",
              show_default=True,
              help="How rag and memorag lay the passages out for the generator: in document order, or by "
                   "retrieval score with the best nearest the question (best-last) or first.")  # fmt: skip
@click.option("--readers", default="none", show_default=True,
              help="Comma-separated: how rag and memorag answer from their evidence. none: the generator's "
                   "answer, unchecked; auto, extract, generate: the grounded reader (rows 'rag/auto').")  # fmt: skip
@click.option("--unanswerable", is_flag=True,
              help="Ask each document's questions of the next document, where the answer is not.")  # fmt: skip
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the table, settings and every answer here.")  # fmt: skip
def eval_(path: Path, fmt: str, modes: str, limit: int | None, questions: int | None, beta: int | None,
          k: int | None, answer_tokens: int | None, fusion: str | None, evidence_order: str, readers: str,
          unanswerable: bool, json_out: Path | None) -> None:  # fmt: skip
    """Answer a dataset's questions in every mode and compare F1, EM, ROUGE-L, evidence recall and latency.

    All modes share the documents, chunker, embedder, generator and k. Memories
    are cached in the memory store, so another mode or run reuses them.

    \b
    python manage.py eval ../shared/data/qmsum/val.jsonl --format qmsum --limit 10 --json qmsum.json
    """
    import json

    from agent.evaluation import ANSWER_TOKENS, SHORT_ANSWERS, EvalConfig, Harness, load_samples
    from agent.models import load_model
    from agent.retrieval import DEFAULT_FUSION, get_embedder

    settings = get_settings()
    config = EvalConfig(
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
        k=k or settings.top_k, beta=beta or settings.beta, questions=questions,
        answer_tokens=answer_tokens or ANSWER_TOKENS[fmt], short_answers=SHORT_ANSWERS[fmt],
        fusion=fusion or DEFAULT_FUSION, evidence_order=evidence_order,
        readers=tuple(r.strip() for r in readers.split(",") if r.strip()), unanswerable=unanswerable,
    )  # fmt: skip
    samples = load_samples(fmt, path, limit)
    stores = _Stores()
    harness = Harness(load_model(settings=settings), get_embedder(settings.embedder), stores.index, stores.memories,
                      config, settings)  # fmt: skip
    with progress() as bar:
        task = bar.add_task("loading", total=None)

        def show(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        report = harness.evaluate(path.stem, samples, show)
    _print_report(report)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_json(), indent=2))
        click.echo(f"wrote {json_out}")


def _print_report(report) -> None:
    from rich.table import Table

    k = report.config.k
    summary = report.modes()
    n = report.to_json()["n"]
    table = Table(title=f"{report.dataset}: {n} questions, {report.model}, beta {report.config.beta}, k {k}")
    columns = ["n", "f1", "em", "rougeL", f"recall@{k}", f"hit@{k}", "answer_in_evidence", "answer_recall",
               "supported", "citation_hit", "top_answer_found", "unsupported_shown", "latency_s"]  # fmt: skip
    table.add_column("mode")
    for column in columns:
        table.add_column(column, justify="right")
    for mode, row in summary.items():
        cells = [row[c] for c in columns]
        table.add_row(mode, *("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    memory = report.memory
    click.echo(f"memories: {memory['built']} built in {memory['build_s']:.1f} s, {memory['cached']} from cache")


# memory ---------------------------------------------------------------------
@cli.group(cls=FriendlyGroup)
def memory() -> None:
    """Build, inspect and query single-document memories (no knowledge base needed)."""


class _Stores:
    """Redis memory store and vector index, opened once per command."""

    def __init__(self) -> None:
        from store.memories import MemoryStore
        from store.redis import connect
        from store.vectors import open_index

        settings = get_settings()
        client = connect(settings=settings)
        self.memories = MemoryStore(client, ttl_s=settings.memory_ttl_s)
        self.index = open_index(client, settings)


@memory.command("build")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--beta", type=click.IntRange(1, 64), default=None, help="Compression ratio (1 = keep everything).")
@click.option("--key", default=None, help="Name to store the memory under (default: the file name).")
@click.option(
    "--scorer",
    type=click.Choice(MEMORY_SCORERS),
    default=None,
    help="Which KV pairs stay (default: MEMORAG_SCORER): snapkv forms fastest; surprisal keeps facts stated once.",
)
def memory_build(file: Path, beta: int | None, key: str | None, scorer: str | None) -> None:
    """Read FILE once: index its chunks and store its compressed global memory in Redis."""
    from agent.documents import read_document
    from agent.models import load_model
    from agent.pipeline import memorize_document
    from agent.retrieval import get_embedder

    settings = get_settings()
    if scorer:
        settings = dataclasses.replace(settings, scorer=scorer)
    text = read_document(file, settings.max_document_mb)
    stores = _Stores()
    lm = load_model(settings=settings)
    name = key or file.name
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"reading {file.name}", total=None)
        mem, n_chunks = memorize_document(
            lm, get_embedder(settings.embedder), stores.memories, stores.index, CLI_KB, name, text,
            settings=settings, beta=beta,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    meta = mem.meta
    click.echo(
        f"memory {name!r}: {meta.doc_tokens} tokens -> {meta.memory_tokens} memory tokens (beta {meta.beta}), "
        f"{mem.nbytes / 2**20:.1f} MiB, {n_chunks} chunks indexed, {time.perf_counter() - started:.1f} s"
    )


@memory.command("show")
@click.argument("name")
def memory_show(name: str) -> None:
    """Sizes, compression ratio and model of the stored memory NAME."""
    manifest = _Stores().memories.manifest(CLI_KB, name)
    if manifest is None:
        raise Failure(f"no memory named {name!r} (see 'manage.py memory list')")
    meta = manifest.meta
    rows = {
        "model": f"{meta['model_name']} ({meta['model_fingerprint']})",
        "document tokens": meta["doc_tokens"],
        "memory tokens": meta["memory_tokens"],
        "ratio": f"{meta['doc_tokens'] / max(1, meta['memory_tokens']):.1f}x (beta {meta['beta']})",
        "window / scorer": f"{meta['window']} / {meta['scorer']}",
        "bytes": f"{manifest.size} ({manifest.size / max(1, meta['doc_tokens']):.0f} per document token)",
        "chunks": manifest.chunks,
        "sha256": manifest.sha256[:16],
    }
    for label, value in rows.items():
        click.echo(f"{label:>16}: {value}")


@memory.command("list")
def memory_list() -> None:
    """Names of the stored single-document memories."""
    for name in _Stores().memories.list(CLI_KB):
        click.echo(name)


@memory.command("ask")
@click.argument("name")
@click.argument("question")
@click.option(
    "--task", type=click.Choice(["qa", "memorag", "summarize"]), default="qa", show_default=True,
    help="qa: from memory alone; memorag: memory clues -> retrieval -> answer; summarize: key points -> summary.",
)  # fmt: skip
@click.option("--show-clues", is_flag=True, help="Also print the clues the memory wrote.")
def memory_ask(name: str, question: str, task: str, show_clues: bool) -> None:
    """Answer QUESTION about the document stored as NAME, printing the evidence used."""
    from agent.models import load_model
    from agent.pipeline import answer
    from agent.retrieval import get_embedder

    if not question.strip():
        raise Failure("the question is empty")
    settings = get_settings()
    stores = _Stores()
    if not stores.memories.exists(CLI_KB, name):
        raise Failure(f"no memory named {name!r} (see 'manage.py memory list')")
    lm = load_model(settings=settings)
    with console.status("reading the memory and thinking"):
        result = answer(lm, get_embedder(settings.embedder), stores.memories, stores.index, CLI_KB, [name],
                        question, task=task, settings=settings)  # fmt: skip
    click.echo(result.text)
    reading = result.reading
    if reading and reading.supported and reading.citation:
        cited = reading.citation
        click.echo(f"  source: \"{' '.join(cited.quote.split())}\" ({cited.chunk_id}, "
                   f"chars {cited.char_start}-{cited.char_end})")  # fmt: skip
    elif reading and reading.reason:
        click.echo(f"  not shown as an answer: {reading.reason}")
    for clue in result.clues if show_clues else []:
        click.echo(f"  clue: {clue}")
    for e in result.evidence:
        snippet = " ".join(e.chunk.text.split())[:160]
        click.echo(f"  evidence [{e.chunk.doc_id} #{e.chunk.ordinal}, chars {e.chunk.char_start}-{e.chunk.char_end}]: "
                   f"{snippet}")  # fmt: skip
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    click.echo(f"  ({task}; {stages})")


@memory.command("delete")
@click.argument("name")
def memory_delete(name: str) -> None:
    """Remove the stored memory NAME and its indexed chunks."""
    stores = _Stores()
    if not stores.memories.delete(CLI_KB, name):
        raise Failure(f"no memory named {name!r}")
    stores.index.delete_document(CLI_KB, name)
    click.echo(f"deleted {name}")


def main() -> None:
    cli(prog_name="manage.py")


if __name__ == "__main__":
    sys.exit(main())
