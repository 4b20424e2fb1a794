"""Retraining the clue writer from feedback, and the adapters it produced."""

from __future__ import annotations

import click

from cli.base import Failure, FriendlyGroup, Step, follow
from service import training


@click.command()
@click.option("--wait", is_flag=True, help="Follow the run and print its decision.")
@click.option(
    "--force/--if-enough",
    default=True,
    show_default=True,
    help="Train now, or only once MEMORAG_RETRAIN_MIN_FEEDBACK new rows arrived (as beat does).",
)
def retrain(wait: bool, force: bool) -> None:
    """Retrain the clue writer from feedback now, on a worker serving the train queue."""
    handle = training.retrain(force)
    click.echo(f"retraining sent (task {handle.id})")
    if not wait:
        click.echo("follow it with 'python manage.py adapters list'")
        return

    def poll(_) -> Step:
        if handle.ready():
            return Step("done", finished=True)
        info = handle.info
        if isinstance(info, dict) and "stage" in info:
            return Step(info["stage"], info["done"], info["total"] or None)
        return Step("queued")

    follow([handle.id], poll, interval=0.5)
    if handle.failed():
        raise Failure(f"retraining failed: {handle.result}")
    outcome = handle.result
    if outcome.get("status") == "skipped":
        click.echo(f"skipped: {outcome['new_feedback']} new feedback rows, {outcome['needed']} needed")
    else:
        click.echo(f"run {outcome['run']}: {outcome['version']} {outcome['decision']} ({outcome['reason']})")


@click.group(cls=FriendlyGroup)
def adapters() -> None:
    """Clue-writer adapters trained from feedback: list, promote, roll back."""


@adapters.command("list")
def adapters_list() -> None:
    """Every adapter version with its held-out metrics; * marks the promoted one."""
    rows, promoted = training.list_adapters()
    if not rows:
        click.echo("no adapters yet: import or give feedback, then 'python manage.py retrain'")
        return
    for row in rows:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in row.metrics.items() if isinstance(v, float) and k != "n")
        click.echo(f"{'*' if row.promoted else ' '} {row.version}\t{row.created_at:%Y-%m-%d %H:%M}\t{metrics}")
    click.echo(f"promoted: {promoted or 'none (base model writes clues)'}")


@adapters.command("promote")
@click.argument("version")
def adapters_promote(version: str) -> None:
    """Make VERSION the clue adapter every worker uses from its next query."""
    training.promote(version)
    click.echo(f"promoted {version}")


@adapters.command("rollback")
def adapters_rollback() -> None:
    """Go back to the adapter promoted before the current one (or to none)."""
    now = training.rollback()
    click.echo(f"promoted: {now or 'none (base model writes clues)'}")
