"""Reliability by hand: what is stale or damaged, repair it, rebuild a vector index (the reconciler's other face)."""

from __future__ import annotations

from core.settings import get_settings
from service.bases import get_kb
from service.stores import Stores, live_queues, require_worker
from store import db


def _kb_id(kb_name: str | None) -> int | None:
    if kb_name is None:
        return None
    with db.session() as s:
        return get_kb(s, kb_name).id


def findings(kb_name: str | None = None, *, verify: bool = False, fix: bool = False, stores: Stores | None = None):
    """One reconcile pass over a knowledge base (all when None): a look only, unless ``fix``.

    ``verify`` reads every chunk and memory and checks their checksums (slow on a big knowledge base); without
    it, only what is missing is found, as the periodic pass does.
    """
    from workers.app import configure
    from workers.reconcile import reconcile

    configure()
    return reconcile(stores or Stores(), kb_id=_kb_id(kb_name), fix=fix, verify=verify, settings=get_settings())


def repair(kb_name: str | None = None, *, verify: bool = True, stores: Stores | None = None):
    """Send again every lost task and rebuild every damaged document; returns what was found."""
    return findings(kb_name, verify=verify, fix=True, stores=stores)


def memory_worker_missing() -> bool:
    return not live_queues().get("memory")


def reindex(kb_name: str):
    """Send the rebuild of the knowledge base's vector index from the database's text; returns the task handle."""
    from workers.app import configure
    from workers.tasks import reindex as reindex_task

    kb_id = _kb_id(kb_name)
    configure()
    require_worker("memory")
    return reindex_task.apply_async(args=[kb_id])
