"""The Celery app: Redis as broker and result backend, three queues routed by task.

Configured lazily from ``MEMORAG_*`` settings on first use, so importing this
module touches no server (the manager imports it to enqueue, workers to run).
"""

from __future__ import annotations

import threading

from celery import Celery
from kombu import Exchange, Queue

from core.settings import Settings, get_settings
from store.redis import redis_url

QUEUES = ("memory", "query", "train")
# Every worker also serves the control queue, so reconciling never waits behind a backlog of questions.
CONTROL = "control"
ROUTES = {
    "memorag.ingest": {"queue": "memory"},
    "memorag.reindex": {"queue": "memory"},
    "memorag.answer": {"queue": "query"},
    "memorag.retrain": {"queue": "train"},
    "memorag.reconcile": {"queue": CONTROL},
    "memorag.webhook": {"queue": CONTROL},  # short, and never behind a backlog of questions
}

app = Celery("memorag", include=["workers.tasks"])


def celery_config(settings: Settings) -> dict:
    url = redis_url(settings)
    timeout = settings.task_timeout_s
    transport = {
        # A message unacknowledged this long goes back to the queue (its worker died):
        # it must exceed the longest task, or a slow task would run twice.
        "visibility_timeout": timeout,
        "unacked_restore_interval": max(1, min(10, timeout // 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
    }
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"socket_connect_timeout": 5},
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(q, Exchange(q), routing_key=q) for q in (*QUEUES, CONTROL)],
        "task_routes": ROUTES,
        "task_default_queue": "query",
        "task_default_exchange": "query",
        "task_default_routing_key": "query",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 7 * 24 * 3600,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "timezone": "UTC",
        # `manage.py beat` (or a worker started with --beat): retrain on the train queue, skipped by the task
        # itself when feedback is scarce; reconcile the stores with the database. A reconcile message that waited
        # longer than its interval is dropped: the next one does the same work.
        "beat_schedule": {
            "retrain": {"task": "memorag.retrain", "schedule": float(settings.retrain_interval), "args": ()},
            "reconcile": {
                "task": "memorag.reconcile",
                "schedule": float(settings.reconcile_interval),
                "options": {"expires": float(settings.reconcile_interval)},
            },
        },
    }


def configure(settings: Settings | None = None) -> Celery:
    """(Re)configure the app from settings; the manager and tests call it explicitly."""
    config = celery_config(settings or get_settings())
    if app.conf.broker_url not in (None, config["broker_url"]):  # another server: drop connections to the old one
        app._pool, app._backend_cache, app._local = None, None, threading.local()
        app.amqp._producer_pool = None
    app.conf.update(config)
    return app


# Read on first use of the configuration, not at import.
app.add_defaults(lambda: celery_config(get_settings()))
