"""Celery tasks: thin shells over ``workers.jobs``.

Only transient store errors are retried (with backoff); anything else marks
the record failed with its reason, so a bad document never loops.
"""

from __future__ import annotations

from celery import Task, bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

from store.redis import TRANSIENT
from workers import jobs, liveness
from workers.app import app
from workers.liveness import Heartbeat

RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}


def _reporter(task: Task):
    def progress(stage: str, done: int, total: int) -> None:
        if task.request.id and not task.request.is_eager:
            task.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    return progress


@app.task(name="memorag.ingest", bind=True, **RETRY)
def ingest(self: Task, document_id: int) -> dict:
    return jobs.ingest_document(document_id, on_progress=_reporter(self))


@app.task(name="memorag.reindex", bind=True, **RETRY)
def reindex(self: Task, kb_id: int) -> dict:
    return jobs.reindex_knowledge_base(kb_id, on_progress=_reporter(self))


@app.task(name="memorag.reconcile", bind=True, **RETRY)
def reconcile(self: Task, kb_id: int | None = None) -> dict:
    """Beat's periodic pass (or one knowledge base's, asked for by a question that found it damaged): send
    again what was lost, rebuild what the stores dropped."""
    from workers.reconcile import reconcile as run
    from workers.runtime import runtime

    return run(runtime(), kb_id=kb_id).as_dict()


# The answer lives in the database; no result is stored, so a submission does not subscribe to one (that
# subscription was a sixth of an API submission's time, and one more channel per question held by the API).
@app.task(name="memorag.answer", bind=True, ignore_result=True, **RETRY)
def answer(self: Task, query_id: int) -> dict:
    try:
        outcome = jobs.answer_query(query_id)
    except jobs.WaitForRepair as wait:  # the same task id, held by this worker until then: never seen as lost
        raise self.retry(countdown=wait.countdown, max_retries=None) from None
    except Exception:
        _call_back(query_id)  # only if the failure was final (the row says failed), not one retried
        raise
    _call_back(query_id)
    return outcome


def _call_back(query_id: int) -> None:
    from workers import webhooks

    if webhooks.pending(query_id):
        webhook.delay(query_id)


@app.task(name="memorag.webhook", bind=True, ignore_result=True, **RETRY)
def webhook(self: Task, query_id: int) -> dict:
    """POST the result to the query's callback, retried with backoff up to MEMORAG_WEBHOOK_ATTEMPTS times."""
    from core.settings import get_settings
    from workers import webhooks

    settings = get_settings()
    done, attempt = webhooks.deliver(query_id, settings)
    if done:
        return {"query": f"q{query_id}", "webhook": "sent"}
    if attempt >= settings.webhook_attempts:
        return {"query": f"q{query_id}", "webhook": f"gave up after {attempt} attempts"}
    raise self.retry(countdown=webhooks.backoff_s(attempt), max_retries=settings.webhook_attempts)


@app.task(name="memorag.retrain", bind=True, **RETRY)
def retrain(self: Task, force: bool = False) -> dict:
    from workers.retrain import retrain as run

    return run(force=force, on_progress=_reporter(self))


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_logs(logger, **_) -> None:
    from core.redact import install

    install(logger)


@task_prerun.connect
def _started(task_id: str, **_) -> None:
    liveness.RUNNING.add(task_id)  # the heartbeat tells the reconciler this task is alive


@task_postrun.connect
def _finished(task_id: str, **_) -> None:
    liveness.RUNNING.discard(task_id)


class Announce(bootsteps.StartStopStep):
    """Tell the manager which queues this worker serves (see workers.liveness)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs) -> None:
        super().__init__(consumer, **kwargs)
        self.heartbeat: Heartbeat | None = None

    def start(self, consumer) -> None:
        from core.settings import get_settings
        from store.disk import DiskTier
        from store.redis import connect

        queues = sorted(consumer.app.amqp.queues.consume_from)
        folder = get_settings().memory_tier_dir
        tier = DiskTier(folder).identity() if folder else None
        self.heartbeat = Heartbeat(connect(consumer.app.conf.broker_url), consumer.hostname, queues, tier).start()

    def shutdown(self, consumer) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None

    stop = shutdown


app.steps["consumer"].add(Announce)
