"""The HTTP API against the app with the embedded Valkey, SQLite and (for the whole path) a real worker."""

from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from api.app import create_app
from service import bases, keys
from store import db
from tests.test_service import BAKERY, OBSERVATORY, wait_for
from workers import runtime
from workers.app import configure


@pytest.fixture
def client(records):
    return TestClient(create_app())


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def town(client):
    """Two knowledge bases and a key of each role for the first."""
    bases.create_kb("town")
    bases.create_kb("other")
    return {role: keys.create_key(role, "town") for role in keys.ROLES} | {"other": keys.create_key("admin", "other")}


def test_the_page_is_served_without_a_build_step(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "sessionStorage" in page.text and "/v1/queries/" in page.text  # the key is kept per browser session


def test_an_event_stream_ends_with_the_final_state(client, town):
    with db.session() as s:
        query = db.Query(
            kb_id=1, text="Who?", status=db.Status.failed, error="knowledge base 'town' has no ready documents"
        )
        s.add(query)
        s.flush()
        query_id = query.id
    with client.stream("GET", f"/v1/queries/{query_id}/events", headers=auth(town["reader"])) as stream:
        lines = [line for line in stream.iter_lines() if line]
    assert lines[0] == "event: end" and '"status": "failed"' in lines[1] and "no ready documents" in lines[1]
    assert client.get(f"/v1/queries/{query_id}/events", headers=auth(town["other"])).status_code == 404


def test_health_needs_no_key_and_readiness_names_what_is_missing(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["worker:query"] == "no live worker"


def test_every_endpoint_refuses_no_key_a_wrong_key_and_a_revoked_key(client, town):
    calls = [("get", "/v1/kbs"), ("get", "/v1/kbs/town/documents"), ("get", "/v1/documents/1"),
             ("get", "/v1/queries/1"), ("get", "/v1/queries/1/result"), ("delete", "/v1/kbs/town")]  # fmt: skip
    revoked = keys.create_key("admin", "town")
    keys.revoke_key(int(revoked.split("_")[1]))
    wrong = town["reader"][:-3] + "xyz"
    for method, path in calls:
        for headers in ({}, auth(wrong), auth(revoked), auth("not-a-key")):
            reply = client.request(method, path, headers=headers)
            assert reply.status_code == 401, (method, path, headers, reply.text)
            assert set(reply.json()) == {"error"}


def test_a_key_sees_only_its_knowledge_base_and_does_only_what_its_role_allows(client, town):
    assert [kb["name"] for kb in client.get("/v1/kbs", headers=auth(town["reader"])).json()] == ["town"]
    stranger = auth(town["other"])
    for path in ("/v1/kbs/town/documents", "/v1/kbs/nowhere/documents"):  # no existence leak: both 404
        reply = client.get(path, headers=stranger)
        assert reply.status_code == 404 and "no knowledge base named" in reply.json()["error"]
    upload = client.post("/v1/kbs/town/documents", headers=auth(town["reader"]), files={"files": ("a.txt", b"Hi.")})
    assert upload.status_code == 403 and "needs a writer key" in upload.json()["error"]
    created = client.post("/v1/kbs", headers=auth(town["admin"]), json={"name": "new"})
    assert created.status_code == 403  # an admin of one knowledge base may not create others
    operator = keys.create_key("admin")
    assert client.post("/v1/kbs", headers=auth(operator), json={"name": "new"}).status_code == 201
    assert client.post("/v1/kbs", headers=auth(operator), json={"name": "new"}).status_code == 409
    assert client.post("/v1/kbs", headers=auth(operator), json={"name": "bad name"}).status_code == 422


def test_bad_input_is_one_clear_line_with_the_right_status(client, town, monkeypatch):
    writer = auth(town["writer"])
    assert client.post("/v1/kbs/town/queries", headers=writer, json={"question": ""}).status_code == 422
    assert (
        client.post("/v1/kbs/town/queries", headers=writer, json={"question": "Hi?", "task": "poem"}).status_code == 422
    )
    no_docs = client.post("/v1/kbs/town/queries", headers=writer, json={"question": "Who?"})
    assert no_docs.status_code == 422 and "has no ready documents" in no_docs.json()["error"]
    monkeypatch.setenv("MEMORAG_MAX_DOCUMENT_MB", "0.00001")
    big = client.post("/v1/kbs/town/documents", headers=writer, files={"files": ("big.txt", b"word " * 100)})
    assert big.status_code == 413 and "big.txt" in big.json()["error"] and "over the" in big.json()["error"]
    monkeypatch.delenv("MEMORAG_MAX_DOCUMENT_MB")
    binary = client.post("/v1/kbs/town/documents", headers=writer, files={"files": ("x.bin", b"\x00\x01\x02" * 50)})
    assert binary.status_code == 422 and "x.bin" in binary.json()["error"]
    no_worker = client.post("/v1/kbs/town/documents", headers=writer, files={"files": ("a.txt", b"Some text.")})
    assert no_worker.status_code == 503 and "no worker" in no_worker.json()["error"]
    assert client.get("/v1/queries/999", headers=writer).status_code == 404
    assert "Traceback" not in no_worker.text


@pytest.mark.model
def test_a_client_uploads_asks_a_batch_is_called_back_signed_and_pages_the_history(client, town, monkeypatch):
    """The API as a program uses it: upload, wait for ready, a batch of three with a callback, three signed
    webhooks on a loopback receiver, the history, every id as printed, feedback."""
    from core.callbacks import SIGNATURE_HEADER, verify
    from service import keys as key_service
    from tests.test_webhooks import Receiver

    monkeypatch.setenv("MEMORAG_BETA", "4")
    monkeypatch.setenv("MEMORAG_WEBHOOK_HOSTS", "127.0.0.1")
    runtime.reset()
    asker = key_service.new_key("writer", "town")
    writer = auth(asker.key)
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    Receiver.replies, Receiver.seen = [], []
    callback = f"http://127.0.0.1:{hook.server_address[1]}/hook"
    with start_worker(configure(), pool="solo", perform_ping_check=False, shutdown_timeout=30):
        files = [("files", ("bakery.txt", BAKERY.encode())), ("files", ("observatory.txt", OBSERVATORY.encode()))]
        accepted = client.post("/v1/kbs/town/documents", headers=writer, files=files)
        assert accepted.status_code == 202 and [d["status"] for d in accepted.json()] == ["queued", "queued"]
        again = client.post("/v1/kbs/town/documents", headers=writer, files=files[:1]).json()
        assert again[0]["existing"] == "bakery.txt"  # the same text is not added twice
        ids = [d["id"] for d in accepted.json()]  # as printed: d1, d2
        for doc_id in ids:
            wait_for(lambda d=doc_id: client.get(f"/v1/documents/{d}", headers=writer).json()["status"] == "ready")
        asked = ["Who built the telescope?", "When was the bakery founded?", "What does the bakery sell?"]
        batch = {"questions": [{"question": q} for q in asked], "callback_url": callback}
        queued = client.post("/v1/kbs/town/queries:batch", headers=writer, json=batch)
        assert queued.status_code == 202 and len({q["id"] for q in queued.json()}) == 3
        wait_for(lambda: len(Receiver.seen) >= 3, timeout=300)
    hook.shutdown()
    called = {json.loads(body)["query"]: (headers, body) for headers, body in Receiver.seen}
    assert set(called) == {q["id"] for q in queued.json()}  # one webhook each
    for sent, body in called.values():
        assert verify(asker.webhook_secret, body, sent[SIGNATURE_HEADER]) and json.loads(body)["status"] == "done"
    history = client.get("/v1/kbs/town/queries?limit=2", headers=auth(town["reader"])).json()
    rest = client.get(f"/v1/kbs/town/queries?cursor={history['next_cursor']}", headers=auth(town["reader"])).json()
    assert [q["question"] for q in history["queries"] + rest["queries"]] == asked[::-1]
    for ident in [*ids, *called]:
        assert client.get(f"/v1/{'documents' if ident[0] == 'd' else 'queries'}/{ident}", headers=writer).is_success
    query = queued.json()[0]["id"]
    result = client.get(f"/v1/queries/{query}/result", headers=auth(town["reader"])).json()
    assert result["status"] == "done" and result["evidence"] and result["text"]
    if result["supported"]:
        assert result["citation"]["document"] in ("bakery.txt", "observatory.txt")
    assert client.get(f"/v1/queries/{query}/result", headers=auth(town["other"])).status_code == 404
    assert (
        client.post(f"/v1/queries/{query}/feedback", headers=auth(town["reader"]), json={"good": True}).status_code
        == 403
    )
    given = client.post(f"/v1/queries/{query}/feedback", headers=writer, json={"good": False, "answer": "Ilse Varga"})
    assert given.status_code == 201
    with db.session() as s:
        row = s.get(db.Feedback, given.json()["feedback"])
        assert (f"q{row.query_id}", row.rating, row.corrected_answer) == (query, -1, "Ilse Varga")
    runtime.reset()


def test_adapters_are_for_an_operator_only(client, town):
    for key in (town["admin"], town["writer"]):  # an admin of one knowledge base is not an operator
        assert client.get("/v1/adapters", headers=auth(key)).status_code == 403
    operator = auth(keys.create_key("admin"))
    assert client.get("/v1/adapters", headers=operator).json() == {"promoted": None, "versions": []}
    missing = client.post("/v1/adapters/v9/promote", headers=operator)
    assert missing.status_code == 404 and "no adapter 'v9'" in missing.json()["error"]
    nothing = client.post("/v1/adapters/rollback", headers=operator)
    assert nothing.status_code == 404 and nothing.json() == {"error": "no adapter is promoted; nothing to roll back"}


def _every_endpoint(client) -> list[tuple[str, str]]:
    """(method, path) of every operation in the app's own schema, ids pointing at the 'town' rows."""
    fill = {"{name}": "town", "{doc_id}": "1", "{query_id}": "1", "{version}": "a1"}
    calls = []
    for path, operations in client.app.openapi()["paths"].items():
        for key, value in fill.items():
            path = path.replace(key, value)
        calls += [(method.upper(), path) for method in operations]
    return calls


def test_every_endpoint_by_key_no_wrong_revoked_and_another_knowledge_base(client, town):
    with db.session() as s:  # a document and a query in 'town', ids 1
        s.add(db.Document(kb_id=1, name="a.txt", text="Some text.", content_hash="h", status=db.Status.ready))
        s.add(db.Query(kb_id=1, text="Who?", status=db.Status.failed, error="none"))
    revoked = keys.create_key("admin", "town")
    keys.revoke_key(int(revoked.split("_")[1]))
    open_paths = {"/healthz", "/readyz"}
    calls = [(m, p) for m, p in _every_endpoint(client) if p not in open_paths]
    assert len(calls) == 19  # every operation but the two health checks
    for method, path in calls:
        for headers in ({}, auth(town["reader"] + "x"), auth(revoked)):
            assert client.request(method, path, headers=headers).status_code == 401, (method, path, headers)
        body = {"files": {"files": ("a.txt", b"Text.")}} if path.endswith("/documents") and method == "POST" else {}
        valid = body or {"json": {"name": "new", "question": "Who?", "good": True, "questions": [{"question": "Who?"}]}}
        stranger = client.request(method, path, headers=auth(town["other"]), **valid)
        expected = 403 if "/adapters" in path or (path == "/v1/kbs" and method == "POST") else 404
        if path == "/v1/kbs" and method == "GET":
            assert stranger.status_code == 200 and "town" not in stranger.text
        else:
            assert stranger.status_code == expected, (method, path, stranger.status_code, stranger.text)


def test_a_store_that_is_down_is_503_and_a_public_address_needs_a_key(client, town, monkeypatch):
    from click.testing import CliRunner

    from manage import cli

    monkeypatch.setenv("MEMORAG_REDIS_URL", "redis://127.0.0.1:1/0")
    down = client.post("/v1/kbs/town/documents", headers=auth(town["writer"]), files={"files": ("a.txt", b"Text.")})
    assert down.status_code == 503 and "cannot reach Redis" in down.json()["error"]
    for key in keys.list_keys():
        keys.revoke_key(key.id)
    refused = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert refused.exit_code == 2 and "refusing to listen on 0.0.0.0 without an API key" in refused.output
