"""What a submission's fast path may and may not skip: a worker that went away is still noticed, a question is
still refused without a ready document, and the database keeps what the settings say."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text
from sqlmodel import select


def _announce(client, queues: list[str]) -> None:
    from workers.liveness import PREFIX

    beat = {"name": "test@host", "queues": queues, "host": "host", "running": []}
    client.set(PREFIX + "test@host", json.dumps(beat), ex=30)


def test_a_worker_seen_a_moment_ago_is_trusted_but_one_gone_is_noticed(records, redis_client, monkeypatch):
    from service import stores
    from service.errors import NoWorker
    from workers import liveness

    monkeypatch.setattr(liveness, "BEAT_S", 0)  # no grace for a wiped store: the refusal comes at once
    monkeypatch.setattr(stores, "SEEN_LIVE_S", 0.5)
    stores._seen_live.clear()
    _announce(redis_client, ["query"])
    stores.require_worker("query")
    redis_client.delete(liveness.PREFIX + "test@host")
    stores.require_worker("query")  # seen live under half a second ago: not read again
    with pytest.raises(NoWorker):
        stores.require_worker("memory")  # a queue never seen served is read, and refused
    time.sleep(0.6)
    with pytest.raises(NoWorker, match="no worker is serving the 'query' queue"):
        stores.require_worker("query")


def test_a_question_needs_a_ready_document_of_its_own_knowledge_base(records, redis_client):
    from service import bases, queries
    from service.errors import Invalid, NotFound
    from store import db

    _announce(redis_client, ["query"])
    town, other = bases.ensure_kb("town"), bases.ensure_kb("other")
    with db.session() as s:
        s.add(db.Document(kb_id=other, name="o.txt", text="Other.", content_hash="o", status=db.Status.ready))
        s.add(db.Document(kb_id=town, name="t.txt", text="Town.", content_hash="t", status=db.Status.processing))
    with pytest.raises(Invalid, match=r"has no ready documents \(still processing: d\d+ t.txt\)"):
        queries.ask("town", "Who?")
    with pytest.raises(NotFound, match="no knowledge base named 'nowhere'"):
        queries.ask("nowhere", "Who?")
    ticket = queries.ask("other", "Who?")
    with db.session() as s:
        assert s.get(db.Query, ticket.id).kb_id == other


@pytest.mark.parametrize(("setting", "level"), [(None, 1), ("full", 2)])
def test_sqlite_syncs_as_the_setting_says(records, monkeypatch, setting, level):
    from store import db

    if setting:
        monkeypatch.setenv("MEMORAG_SQLITE_SYNC", setting)
    db.reset_engines()
    with db.get_engine().connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == level
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_a_store_gone_between_the_check_and_the_send_is_a_refusal_that_keeps_the_question(records, valkey_url,
                                                                                          monkeypatch):  # fmt: skip
    """Redis killed just after the worker check: the person gets one clear refusal, not a crash, and the saved
    question stays queued for the reconciler to send."""
    from conftest import free_port

    from service import bases, queries
    from service.errors import NotSent
    from store import db
    from workers.app import configure

    kb = bases.ensure_kb("town")
    with db.session() as s:
        s.add(db.Document(kb_id=kb, name="t.txt", text="Town.", content_hash="t", status=db.Status.ready))
    monkeypatch.setattr(queries, "require_worker", lambda queue: None)  # the check passed; then the store died
    monkeypatch.setenv("MEMORAG_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    configure()
    try:
        with pytest.raises(NotSent, match=r"q\d+ is saved, but the queue did not answer"):
            queries.ask("town", "Who built the bridge?")
    finally:
        monkeypatch.setenv("MEMORAG_REDIS_URL", valkey_url)
        configure()
    with db.session() as s:
        kept = s.exec(select(db.Query.status).where(db.Query.kb_id == kb)).all()
    assert kept == [db.Status.queued]
