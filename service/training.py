"""Retraining the clue writer from feedback, and the adapters it produces."""

from __future__ import annotations

from core.settings import get_settings
from service.stores import require_worker


def retrain(force: bool = True):
    """Send a retraining run to a worker serving the train queue; returns the task's handle.

    ``force=False`` trains only once ``MEMORAG_RETRAIN_MIN_FEEDBACK`` new rows arrived, as beat does.
    """
    from workers.app import configure
    from workers.tasks import retrain as retrain_task

    configure()
    require_worker("train")
    return retrain_task.apply_async(kwargs={"force": force})


def registry():
    from store.adapters import AdapterRegistry
    from store.redis import connect

    return AdapterRegistry(connect(settings=get_settings()))


def list_adapters() -> tuple[list, str | None]:
    """Every adapter version (oldest first) and the promoted one, if any."""
    adapters = registry()
    return adapters.versions(), adapters.promoted()


def promote(version: str) -> None:
    registry().promote(version)


def rollback() -> str | None:
    """Promote the version promoted before the current one; returns it (None: the base model)."""
    return registry().rollback()
