"""API keys for the HTTP API: create (shown once), list, revoke."""

from __future__ import annotations

import click

from cli.base import FriendlyGroup
from service import keys as key_service


@click.group(cls=FriendlyGroup)
def keys() -> None:
    """API keys: a role (reader, writer, admin) in one knowledge base, or in all of them."""


@keys.command("create")
@click.option("--kb", "kb_name", default=None, help="The knowledge base the key is for (default: every one).")
@click.option("--role", type=click.Choice(key_service.ROLES), required=True,
              help="reader: ask and read results; writer: also add/remove documents and give feedback; "
                   "admin: also manage knowledge bases, keys and adapters.")  # fmt: skip
def keys_create(kb_name: str | None, role: str) -> None:
    """Create a key and print it once (only its hash is kept).

    The key is the one line on standard output; its webhook signing secret (for verifying the
    X-Memorag-Signature of callbacks the key's queries ask for) goes to standard error, also once.
    """
    made = key_service.new_key(role, kb_name)
    click.echo(made.key)
    click.echo(f"webhook signing secret (shown once): {made.webhook_secret}", err=True)


@keys.command("list")
def keys_list() -> None:
    """Every key's id, role, knowledge base and whether it is revoked (never the key itself)."""
    for key in key_service.list_keys():
        click.echo(f"{key.id}\t{key.role}\t{key.kb or '*'}\t{'revoked' if key.revoked else 'active'}")


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke key KEY_ID: requests with it are refused from now on."""
    key_service.revoke_key(key_id)
    click.echo(f"revoked key {key_id}")
