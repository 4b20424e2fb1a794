"""Records on SQLite and on the PostgreSQL server of this machine."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from core.settings import Settings
from store import db

PG_ADMIN = os.environ.get("MEMORAG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = {"knowledge_base", "document", "query", "answer", "feedback", "training_run", "adapter_version"}


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostgreSQL database for this run, dropped afterwards."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    name = f"memorag_test_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE DATABASE {name}")
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    db.reset_engines()
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path):
    sqlite = f"sqlite:///{tmp_path / 'records.db'}"
    url = sqlite if request.param == "sqlite" else request.getfixturevalue("pg_database")
    yield Settings(home=tmp_path, database_url=url)
    db.reset_engines()


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def test_schema_is_created_on_first_use_at_the_latest_revision(settings):
    engine = db.get_engine(settings)
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
    assert "evidence" in {c["name"] for c in inspect(engine).get_columns("feedback")}  # revision 0002
    db.reset_engines()
    db.get_engine(settings)  # a second process's first use migrates nothing and fails nothing


def test_records_round_trip_with_json_fields(settings):
    with db.session(settings) as s:
        kb = db.KnowledgeBase(name="papers")
        s.add(kb)
        s.flush()
        doc = db.Document(kb_id=kb.id, name="a.md", text="alpha " * 1000, content_hash="h1", timings={"ingest_s": 1.5})
        query = db.Query(kb_id=kb.id, text="what?")
        s.add_all([doc, query])
        s.flush()
        evidence = [{"chunk_id": "d1:0", "doc_id": "d1", "score": 0.03, "text": "alpha"}]
        s.add(db.Answer(query_id=query.id, text="it", clues=["c1", "c2"], evidence=evidence, timings={"answer": 2.0}))
        s.add(db.Feedback(query_id=query.id, rating=-1, corrected_answer="that", comment="close"))
        query_id = query.id
    with db.session(settings) as s:
        answer = s.exec(select(db.Answer).where(db.Answer.query_id == query_id)).one()
        assert answer.clues == ["c1", "c2"] and answer.evidence[0]["score"] == 0.03
        feedback = s.exec(select(db.Feedback)).one()
        assert (feedback.rating, feedback.corrected_answer) == (-1, "that")
        assert s.exec(select(db.Document)).one().text == "alpha " * 1000


def test_the_same_content_cannot_enter_a_knowledge_base_twice(settings):
    with db.session(settings) as s:
        one, two = db.KnowledgeBase(name="one"), db.KnowledgeBase(name="two")
        s.add_all([one, two])
        s.flush()
        s.add(db.Document(kb_id=one.id, name="a", text="x", content_hash="same"))
        s.add(db.Document(kb_id=two.id, name="a", text="x", content_hash="same"))  # another KB may hold it
    with pytest.raises(IntegrityError), db.session(settings) as s:
        s.add(db.Document(kb_id=one.id, name="b", text="x", content_hash="same"))


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    settings = Settings(home=tmp_path, database_url="")
    engine = db.get_engine(settings)
    assert str(engine.url) == f"sqlite:///{tmp_path / 'memorag.db'}"
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    db.reset_engines()


def test_a_forked_child_builds_its_own_engine(tmp_path):
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'fork.db'}")
    parent = db.get_engine(settings)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a new engine, usable at once
        ok = db.get_engine(settings) is not parent
        with db.session(settings) as s:
            s.add(db.KnowledgeBase(name="from-child"))
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    with db.session(settings) as s:
        assert s.exec(select(db.KnowledgeBase.name)).all() == ["from-child"]
    db.reset_engines()


def test_an_unreachable_database_is_named_without_its_password(tmp_path):
    settings = Settings(home=tmp_path, database_url="postgresql://memorag:secret@127.0.0.1:1/memorag")
    with pytest.raises(db.DatabaseUnavailable) as raised:
        db.get_engine(settings)
    message = str(raised.value)
    assert "127.0.0.1:1/memorag" in message and "secret" not in message and "MEMORAG_DATABASE_URL" in message


def test_a_database_at_revision_0001_upgrades_and_keeps_its_feedback(tmp_path):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with create_engine(url).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text("INSERT INTO knowledge_base (id, name, description, created_at) VALUES (1, 'kb', '', '2026-01-01')")
        )
        conn.execute(
            text(
                "INSERT INTO query (id, kb_id, text, task, status, created_at) "
                "VALUES (1, 1, 'q?', 'memorag', 'done', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO feedback (id, query_id, rating, source, created_at) "
                "VALUES (1, 1, -1, 'user', '2026-01-01')"
            )
        )
    settings = Settings(home=tmp_path, database_url=url)
    db.get_engine(settings)  # first use migrates to the head
    with db.session(settings) as s:
        row = s.get(db.Feedback, 1)
    assert (row.rating, row.evidence) == (-1, [])
    db.reset_engines()
