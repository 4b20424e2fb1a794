"""The command line: a thin click face over ``service`` (and ``agent`` for one-off memories and eval).

Each module holds one family of commands; this one assembles them under ``cli``.
"""

from __future__ import annotations

import click

from cli.base import FriendlyGroup, LineProgress
from cli.bases import docs, ingest, kb, remove
from cli.evaluate import eval_
from cli.keys import keys
from cli.memory import memory
from cli.queries import ask, feedback, history, result, status
from cli.repair import reindex, repair
from cli.services import beat, down, models, serve, up, worker
from cli.training import adapters, retrain
from core.settings import get_settings


@click.group(cls=FriendlyGroup)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """memorag: answer questions over long documents with a compressed global memory.

    Configuration comes from MEMORAG_* environment variables; nothing is
    needed for the embedded defaults (data under ~/.local/share/memorag).
    """
    get_settings()  # a bad MEMORAG_* value stops every command here, in one line
    if ctx.invoked_subcommand != "up":  # 'up' starts the services to keep them; nothing else leaves one behind
        ctx.call_on_close(_stop_what_this_command_started)


def _stop_what_this_command_started() -> None:
    """A one-off command (eval, memory, ask...) that had to start the embedded Valkey stops it when it ends;
    its data is saved and 'manage.py up' starts it again."""
    from service.processes import stop_store_if_started_here

    if stop_store_if_started_here():
        click.echo("stopped the embedded Valkey this command started ('python manage.py up' keeps one running)",
                   err=True)  # fmt: skip


for command in (
    up,
    down,
    worker,
    beat,
    serve,
    models,
    keys,
    kb,
    ingest,
    docs,
    remove,
    ask,
    status,
    result,
    history,
    feedback,
    repair,
    reindex,
    retrain,
    adapters,
    eval_,
    memory,
):
    cli.add_command(command)

__all__ = ["LineProgress", "cli"]
