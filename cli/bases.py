"""Knowledge bases and their documents: kb create/list/show/delete, ingest, docs, remove."""

from __future__ import annotations

from pathlib import Path

import click

from cli.base import Failure, FriendlyGroup, Step, follow
from service import bases, documents


@click.group(cls=FriendlyGroup)
def kb() -> None:
    """Create, list, inspect and delete knowledge bases."""


@kb.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the knowledge base holds.")
def kb_create(name: str, description: str) -> None:
    """Create the knowledge base NAME (letters, digits, '.', '_', '-'; up to 64)."""
    bases.create_kb(name, description)
    click.echo(f"created knowledge base {name}")


@kb.command("list")
def kb_list() -> None:
    """Knowledge bases with their document counts by status."""
    rows = bases.list_kbs()
    if not rows:
        click.echo("no knowledge bases yet: python manage.py kb create NAME")
    for row in rows:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(row.documents.items())) or "empty"
        click.echo(f"{row.name}\t{summary}\t{row.description}")


@kb.command("show")
@click.argument("name")
def kb_show(name: str) -> None:
    """Details of the knowledge base NAME: documents, tokens, memories, queries."""
    d = bases.show_kb(name)
    click.echo(f"{'name':>16}: {d.name}")
    click.echo(f"{'description':>16}: {d.description or '-'}")
    click.echo(f"{'created':>16}: {d.created_at:%Y-%m-%d %H:%M} UTC")
    click.echo(f"{'documents':>16}: {d.documents} ({d.ready} ready)")
    click.echo(f"{'tokens':>16}: {d.tokens} in, {d.memory_tokens} in memory")
    click.echo(f"{'queries':>16}: {d.queries}")


@kb.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def kb_delete(name: str, yes: bool) -> None:
    """Delete the knowledge base NAME with its documents, memories, chunks, queries and feedback."""
    count = bases.document_count(name)
    if not yes and not click.confirm(f"delete {name!r} and its {count} document(s)?", default=False):
        raise Failure("not deleted")
    deleted = bases.delete_kb(name)
    click.echo(f"deleted knowledge base {name} ({deleted} document(s))")


@click.command()
@click.argument("kb_name", metavar="KB")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--wait", is_flag=True, help="Show progress until every document is ready.")
def ingest(kb_name: str, files: tuple[Path, ...], wait: bool) -> None:
    """Add FILES (plain text, Markdown or PDF) to the knowledge base KB.

    Each file becomes a document with its own memory; a file whose content the
    knowledge base already holds is not added twice. Prints document ids at once.
    """
    added = documents.add_documents(kb_name, documents.read_files(files))
    for doc in added:
        if doc.existing is None:
            click.echo(f"{doc.public_id}\t{doc.name}\tqueued")
        else:
            click.echo(f"{doc.public_id}\t{doc.name}\talready in {kb_name} as {doc.existing} ({doc.status})")
    if wait:
        follow_ingestion([d for d in added if d.pending])


def follow_ingestion(docs: list[documents.Added]) -> None:
    """Each document's stage and tokens read until it is ready or failed."""

    def poll(doc_id: int) -> Step:
        doc, reported = documents.document_progress(doc_id)
        if doc is None:
            return Step(f"d{doc_id}: deleted", finished=True, failure=f"d{doc_id}: deleted")
        label = f"{doc.public_id} {doc.name}"
        if doc.finished:
            failure = f"{doc.public_id}: {doc.error}" if doc.status == "failed" else None
            return Step(f"{label}: {doc.status}", total=doc.token_count or 1, finished=True, failure=failure)
        if reported:
            return Step(f"{label}: {reported['stage']}", reported["done"], reported["total"] or None)
        return Step(f"{label}: {doc.status}")

    failed = follow([d.id for d in docs], poll)
    if failed:
        raise Failure("ingestion failed for " + "; ".join(failed))


@click.command()
@click.argument("kb_name", metavar="KB")
def docs(kb_name: str) -> None:
    """The documents of KB with status, tokens and memory size."""
    rows = documents.list_documents(kb_name)
    if not rows:
        click.echo(f"{kb_name} has no documents: python manage.py ingest {kb_name} FILE...")
    for d in rows:
        sizes = f"{d.token_count} tokens -> {d.memory_tokens} memory tokens, {d.chunk_count} chunks"
        click.echo(f"{d.public_id}\t{d.status}\t{d.name}\t{sizes if d.token_count else ''}{d.error or ''}")


@click.command()
@click.argument("ident", metavar="ID")
def remove(ident: str) -> None:
    """Remove document ID (d<number>) from its knowledge base: its row, chunks and memory."""
    gone = documents.remove_document(ident)
    click.echo(f"removed {gone.public_id} ({gone.name}, {gone.chunks} chunks) from {gone.kb}")
