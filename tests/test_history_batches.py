"""Asking many questions at once and paging through what was asked: the API and the manager, on real stores.

A worker is announced by its heartbeat in Redis (as a live one would be), so the service accepts work; the
messages wait in the broker, and answers are written as a worker would write them.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from api.app import create_app
from service import bases, keys
from store import db


@pytest.fixture
def town(records, redis_client):
    from workers.app import configure
    from workers.liveness import PREFIX

    configure()
    kb_id = bases.ensure_kb("town")
    with db.session() as s:
        s.add(db.Document(kb_id=kb_id, name="a.txt", text="Kellmouth.", content_hash="h", status=db.Status.ready))
    beat = {"name": "w@host", "queues": ["query", "ingest"], "host": "host", "running": []}
    redis_client.set(PREFIX + "w@host", json.dumps(beat), ex=60)
    return {"kb_id": kb_id, "reader": keys.create_key("reader", "town"), "writer": keys.create_key("writer", "town")}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def answered(query: str, text: str) -> None:
    number = int(query[1:])
    with db.session() as s:
        row = s.get(db.Query, number)
        row.status = db.Status.done
        s.add(row)
        citation = {"doc_id": "d1", "quote": text, "char_start": 0, "char_end": len(text)}
        s.add(db.Answer(query_id=number, text=text, supported=True, citation=citation))


def queries_in(kb_id: int) -> int:
    with db.session() as s:
        return len(s.exec(db.select(db.Query).where(db.Query.kb_id == kb_id)).all())


def test_a_batch_is_queued_whole_or_refused_whole(town, monkeypatch):
    client = TestClient(create_app())
    body = {"questions": [{"question": "Who founded Kellmouth?"}, {"question": "When?", "task": "memorag"}]}
    got = client.post("/v1/kbs/town/queries:batch", headers=auth(town["reader"]), json=body)
    assert got.status_code == 202 and [q["status"] for q in got.json()] == ["queued", "queued"]
    ids = [q["id"] for q in got.json()]
    assert len(set(ids)) == 2
    assert all(client.get(f"/v1/queries/{i}", headers=auth(town["reader"])).is_success for i in ids)

    monkeypatch.setenv("MEMORAG_MAX_BATCH", "2")
    over = {"questions": [{"question": f"Question {n}?"} for n in range(3)]}
    refused = client.post("/v1/kbs/town/queries:batch", headers=auth(town["reader"]), json=over)
    assert refused.status_code == 413 and "limit is 2 (MEMORAG_MAX_BATCH)" in refused.json()["error"]
    bad = {"questions": [{"question": "Fine?"}, {"question": "   "}]}
    refused = client.post("/v1/kbs/town/queries:batch", headers=auth(town["reader"]), json=bad)
    assert refused.status_code == 422 and refused.json()["error"].startswith("question 2: the question is empty")
    assert queries_in(town["kb_id"]) == 2  # nothing of a refused batch was recorded


def test_history_pages_newest_first_with_answers_feedback_and_a_status_filter(town):
    from service import feedback, queries

    asked = [queries.ask("town", f"Question {n}?").public_id for n in range(5)]
    answered(asked[1], "Ilse Varga founded it.")
    answered(asked[3], "In 1821.")
    feedback.give_feedback(asked[3], False, "In 1822.", None)
    client = TestClient(create_app())
    reader = auth(town["reader"])

    first = client.get("/v1/kbs/town/queries?limit=2", headers=reader).json()
    assert [q["id"] for q in first["queries"]] == [asked[4], asked[3]] and first["next_cursor"] == asked[3]
    assert first["queries"][1]["answer"] == "In 1821." and first["queries"][1]["citation"]["quote"] == "In 1821."
    assert first["queries"][1]["feedback"] == [{"id": 1, "good": False, "answer": "In 1822.", "comment": None}]
    rest = client.get(f"/v1/kbs/town/queries?limit=10&cursor={first['next_cursor']}", headers=reader).json()
    assert [q["id"] for q in rest["queries"]] == [asked[2], asked[1], asked[0]] and rest["next_cursor"] is None
    done = client.get("/v1/kbs/town/queries?status=done", headers=reader).json()
    assert [q["id"] for q in done["queries"]] == [asked[3], asked[1]]
    wrong = client.get("/v1/kbs/town/queries?status=finished", headers=reader)
    assert wrong.status_code == 422 and "unknown status 'finished'" in wrong.json()["error"]
    bases.create_kb("other")
    stranger = keys.create_key("admin", "other")
    assert client.get("/v1/kbs/town/queries", headers=auth(stranger)).status_code == 404


def test_the_manager_asks_a_file_of_questions_and_lists_them(town, tmp_path):
    from cli import cli

    path = tmp_path / "questions.txt"
    path.write_text("Who founded Kellmouth?\n\nWhen was it founded?\n")
    run = CliRunner().invoke(cli, ["ask", "town", "--file", str(path)], prog_name="manage.py")
    assert run.exit_code == 0, run.output
    ids = run.output.split()
    assert len(ids) == 2 and all(i.startswith("q") for i in ids)
    answered(ids[0], "Ilse Varga founded it.")
    listed = CliRunner().invoke(cli, ["queries", "town", "--limit", "1"], prog_name="manage.py")
    assert listed.exit_code == 0, listed.output
    assert "When was it founded?" in listed.output and f"--before {ids[1]}" in listed.output
    older = CliRunner().invoke(cli, ["queries", "town", "--before", ids[1], "--json"], prog_name="manage.py")
    page = json.loads(older.output)
    assert [q["answer"] for q in page["queries"]] == ["Ilse Varga founded it."] and page["next_cursor"] is None
    both = CliRunner().invoke(cli, ["ask", "town", "Who?", "--file", str(path)], prog_name="manage.py")
    assert both.exit_code == 2 and "not both" in both.output
