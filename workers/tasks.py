"""Celery tasks: thin shells over ``workers.jobs``.

Only transient store errors are retried (with backoff); anything else marks
the record failed with its reason, so a bad document never loops.
"""

from __future__ import annotations

from celery import Task, bootsteps

from store.redis import StoreUnavailable
from workers import jobs
from workers.app import app
from workers.liveness import Heartbeat

RETRY = {
    "autoretry_for": (StoreUnavailable,),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}


@app.task(name="memorag.ingest", bind=True, **RETRY)
def ingest(self: Task, document_id: int) -> dict:
    def progress(stage: str, done: int, total: int) -> None:
        if self.request.id and not self.request.is_eager:
            self.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    return jobs.ingest_document(document_id, on_progress=progress)


@app.task(name="memorag.answer", bind=True, **RETRY)
def answer(self: Task, query_id: int) -> dict:
    return jobs.answer_query(query_id)


@app.task(name="memorag.retrain", bind=True, **RETRY)
def retrain(self: Task, force: bool = False) -> dict:
    from workers.retrain import retrain as run

    def progress(stage: str, done: int, total: int) -> None:
        if self.request.id and not self.request.is_eager:
            self.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    return run(force=force, on_progress=progress)


class Announce(bootsteps.StartStopStep):
    """Tell the manager which queues this worker serves (see workers.liveness)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs) -> None:
        super().__init__(consumer, **kwargs)
        self.heartbeat: Heartbeat | None = None

    def start(self, consumer) -> None:
        from store.redis import connect

        queues = sorted(consumer.app.amqp.queues.consume_from)
        self.heartbeat = Heartbeat(connect(consumer.app.conf.broker_url), consumer.hostname, queues).start()

    def shutdown(self, consumer) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None

    stop = shutdown


app.steps["consumer"].add(Announce)
