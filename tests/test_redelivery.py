"""The reconciler's reading of the broker's deliveries and the rows' delivery counts, without processes
(tests/test_recovery.py kills real workers)."""

from __future__ import annotations


def test_a_delivery_no_live_worker_holds_is_sent_again_and_one_a_live_worker_holds_is_not(records, redis_client):
    """The reconciler's reading of kombu's deliveries: an hour-old unacknowledged message is lost only when no
    live worker's heartbeat names its task; a lost one is sent again and its delivery dropped."""
    import json
    import time
    import uuid
    from datetime import timedelta

    from service import bases
    from service.stores import Stores
    from store import db
    from workers.app import configure
    from workers.liveness import PREFIX
    from workers.reconcile import UNACKED, UNACKED_INDEX, reconcile

    configure()
    kb_id = bases.ensure_kb("held")
    task = uuid.uuid4().hex
    with db.session() as s:
        query = db.Query(kb_id=kb_id, text="Who?", status=db.Status.processing, task_id=task)
        query.created_at = query.started_at = db.utcnow() - timedelta(hours=1)
        s.add(query)
        s.flush()
        query_id = query.id
    message = [{"headers": {"id": task}, "body": ""}, "query", "query"]
    redis_client.hset(UNACKED, "tag-1", json.dumps(message))
    redis_client.zadd(UNACKED_INDEX, {"tag-1": time.time() - 3600})
    beat = {"name": "slow@host", "queues": ["query"], "host": "host", "running": [task]}
    redis_client.set(PREFIX + "slow@host", json.dumps(beat), ex=15)

    slow = reconcile(Stores(), fix=True)
    assert slow.stale_queries == [] and slow.lost_deliveries == {}  # a live, slow worker holds it
    assert redis_client.hexists(UNACKED, "tag-1")

    redis_client.delete(PREFIX + "slow@host")  # the worker died: its heartbeat expired
    dead = reconcile(Stores(), fix=True)
    assert dead.stale_queries == [f"q{query_id}"] and dead.lost_deliveries == {"tag-1": task}
    assert not redis_client.hexists(UNACKED, "tag-1") and redis_client.zscore(UNACKED_INDEX, "tag-1") is None
    with db.session() as s:
        again = s.get(db.Query, query_id)
    assert again.status == db.Status.queued and again.task_id != task  # sent again under a new task id


def test_a_question_whose_worker_died_on_every_delivery_ends_failed_with_the_reason(records, redis_client):
    from service import bases
    from store import db
    from workers import jobs, runtime

    runtime.reset()
    kb_id = bases.ensure_kb("poison-q")
    with db.session() as s:
        s.add(db.Document(kb_id=kb_id, name="a.txt", text="Kellmouth.", content_hash="x", status=db.Status.ready))
        query = db.Query(kb_id=kb_id, text="Who?", status=db.Status.processing, attempts=3)
        s.add(query)
        s.flush()
        query_id = query.id
    outcome = jobs.answer_query(query_id)
    assert outcome["status"] == "failed"
    assert outcome["error"].startswith("the worker died 3 times while answering this question")
    runtime.reset()
