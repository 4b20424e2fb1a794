"""Reliability by hand: repair what was lost, rebuild a vector index."""

from __future__ import annotations

import click

from cli.base import Failure, Step, follow
from service import repair as service


def describe(found) -> list[str]:
    """What a reconcile pass found, a line per kind (nothing when all is well)."""
    lines = []
    if found.stale_documents:
        lines.append(f"stale documents (their task was lost): {', '.join(found.stale_documents)}")
    if found.stale_queries:
        lines.append(f"stale queries (their task was lost): {', '.join(found.stale_queries)}")
    lines += [f"damaged {doc}: {why}" for doc, why in found.damaged.items()]
    if found.repairing:
        lines.append(f"being repaired: {', '.join(found.repairing)}")
    return lines


@click.command("repair")
@click.argument("kb_name", metavar="[KB]", required=False)
@click.option("--quick", is_flag=True, help="Only look for what is missing; skip reading every chunk and memory.")
def repair(kb_name: str | None, quick: bool) -> None:
    """Send again work whose task was lost, and rebuild documents whose chunks or memory are missing or corrupt.

    The database is the truth: a document or question queued or processing with no live task for
    MEMORAG_RECONCILE_GRACE_S seconds is sent again (jobs are idempotent); a ready document whose chunks or
    memory the stores lost is rebuilt from its stored text and stays answerable meanwhile. Beat runs the same
    pass (without reading every entry) every MEMORAG_RECONCILE_INTERVAL seconds.
    """
    try:
        found = service.repair(kb_name, verify=not quick)
    except TimeoutError as exc:
        raise Failure(str(exc)) from None
    lines = describe(found)
    for line in lines:
        click.echo(line)
    sent = len(found.stale_documents) + len(found.stale_queries) + len(set(found.damaged) - set(found.stale_documents))
    click.echo(f"sent again: {sent}" if sent else "nothing to repair")
    if sent and service.memory_worker_missing():
        click.echo("note: no worker serves the memory queue; start one with 'python manage.py up'")


@click.command("reindex")
@click.argument("kb_name", metavar="KB")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the rebuild until it ends.")
def reindex(kb_name: str, wait: bool) -> None:
    """Rebuild KB's vector index (embedded or Weaviate) from the documents' text in the database.

    Runs on a memory worker, a batch of documents at a time; memories are kept, and questions to other
    knowledge bases never wait on it.
    """
    handle = service.reindex(kb_name)
    click.echo(f"reindex of {kb_name} sent (task {handle.id})")
    if not wait:
        return

    def poll(_) -> Step:
        if handle.ready():
            return Step("done", finished=True, failure=None if handle.successful() else str(handle.result))
        info = handle.info
        if isinstance(info, dict) and "stage" in info:
            return Step(f"{info['stage']} (documents)", info["done"], info["total"] or None)
        return Step("queued")

    failures = follow([handle.id], poll, interval=0.5)
    if failures:
        raise Failure(f"reindex failed: {failures[0]}")
    outcome = handle.result
    click.echo(f"{outcome['kb']}: {outcome['documents']} documents, {outcome['chunks']} chunks indexed")
