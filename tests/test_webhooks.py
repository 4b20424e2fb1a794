"""Webhooks: where a callback may go, how it is signed, and delivery through a real worker to a receiver on
loopback that fails once, then takes it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from core.callbacks import SIGNATURE_HEADER, CallbackRefused, check_callback, sign, verify
from store import db
from tests.test_service import wait_for


def fixed(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///nohost", "no host"),
    ],
)
def test_a_callback_that_is_not_plain_http_is_refused(url, why):
    with pytest.raises(CallbackRefused, match=why):
        check_callback(url, resolve=fixed("93.184.216.34"))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.9", "169.254.169.254", "::1", "fd00::1"])
def test_private_loopback_and_metadata_addresses_are_refused_unless_allowed(address):
    with pytest.raises(CallbackRefused, match="MEMORAG_WEBHOOK_HOSTS"):
        check_callback("https://hooks.example.com/x", resolve=fixed(address))
    assert check_callback("https://hooks.example.com/x", ["hooks.example.com"], resolve=fixed(address))
    assert check_callback("https://hooks.example.com/x", ["10.0.0.0/8", address], resolve=fixed(address))


def test_a_name_that_resolves_to_one_private_address_among_public_ones_is_refused():
    with pytest.raises(CallbackRefused, match=r"10\.0\.0\.5"):
        check_callback("https://rebind.example.com/", resolve=fixed("93.184.216.34", "10.0.0.5"))
    assert check_callback("https://example.com/", resolve=fixed("93.184.216.34"))  # public: allowed by default
    with pytest.raises(CallbackRefused, match="not in MEMORAG_WEBHOOK_HOSTS"):  # an allow-list allows only itself
        check_callback("https://example.com/", ["hooks.internal"], resolve=fixed("93.184.216.34"))


def test_a_signature_verifies_only_for_its_body_secret_and_time():
    body = b'{"query": "q1"}'
    header = sign("whsec_a", body, at=1_000_000)
    assert verify("whsec_a", body, header, now=1_000_010)
    assert not verify("whsec_b", body, header, now=1_000_010)
    assert not verify("whsec_a", body + b" ", header, now=1_000_010)
    assert not verify("whsec_a", body, header, now=1_000_000 + 301)  # a replay, later
    assert not verify("whsec_a", body, "v1=abc", now=1_000_000)


class Receiver(BaseHTTPRequestHandler):
    replies: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[dict, bytes]]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.seen.append((dict(self.headers), body))
        status = Receiver.replies.pop(0) if Receiver.replies else 200
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://169.254.169.254/")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.replies, Receiver.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_a_query_asked_with_a_callback_is_posted_signed_retried_and_every_attempt_recorded(
    records, redis_client, receiver, monkeypatch
):
    from api.app import create_app
    from service import bases, keys
    from workers.app import configure
    from workers.liveness import PREFIX
    from workers.tasks import _call_back

    monkeypatch.setenv("MEMORAG_WEBHOOK_HOSTS", "127.0.0.1")
    app = configure()
    kb_id = bases.ensure_kb("town")
    with db.session() as s:
        s.add(db.Document(kb_id=kb_id, name="a.txt", text="Kellmouth.", content_hash="h", status=db.Status.ready))
    beat = {"name": "w@host", "queues": ["query"], "host": "host", "running": []}
    redis_client.set(PREFIX + "w@host", json.dumps(beat), ex=60)
    made = keys.new_key("reader", "town")
    client = TestClient(create_app())
    headers = {"Authorization": f"Bearer {made.key}"}

    refused = client.post("/v1/kbs/town/queries", headers=headers,
                          json={"question": "Who?", "callback_url": "http://169.254.169.254/latest"})  # fmt: skip
    assert refused.status_code == 422 and "not in MEMORAG_WEBHOOK_HOSTS" in refused.json()["error"]
    asked = client.post("/v1/kbs/town/queries", headers=headers, json={"question": "Who?", "callback_url": receiver})
    assert asked.status_code == 202
    number = int(asked.json()["id"][1:])
    with db.session() as s:  # answered, as a worker would have written it
        row = s.get(db.Query, number)
        row.status = db.Status.done
        s.add(row)
        s.add(db.Answer(query_id=number, text="Ilse Varga founded it.", supported=True))

    Receiver.replies = [500]  # the receiver fails once, then takes it
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        _call_back(number)
        wait_for(lambda: len(Receiver.seen) >= 2, timeout=20)
        _call_back(number)  # a second finish (a late attempt) sends nothing more
    with db.session() as s:
        tries = s.exec(db.select(db.WebhookDelivery).where(db.WebhookDelivery.query_id == number)).all()
    assert [(t.attempt, t.status_code, t.delivered) for t in tries] == [(1, 500, False), (2, 200, True)]
    assert tries[0].error == "the receiver answered 500"
    sent, body = Receiver.seen[-1]
    assert verify(made.webhook_secret, body, sent[SIGNATURE_HEADER])
    posted = json.loads(body)
    assert (posted["event"], posted["query"], posted["answer"]) == (
        "query.done",
        f"q{number}",
        "Ilse Varga founded it.",
    )
    assert len(Receiver.seen) == 2


def test_a_redirect_is_not_followed(records, receiver, monkeypatch):
    from core.settings import get_settings
    from service import bases
    from workers import webhooks

    monkeypatch.setenv("MEMORAG_WEBHOOK_HOSTS", "127.0.0.1")
    kb_id = bases.ensure_kb("town")
    with db.session() as s:
        query = db.Query(kb_id=kb_id, text="Who?", status=db.Status.failed, error="no", callback_url=receiver)
        s.add(query)
        s.flush()
        number = query.id
    Receiver.replies = [302]
    assert webhooks.deliver(number, get_settings()) == (False, 1)
    assert len(Receiver.seen) == 1  # the Location was not visited
    with db.session() as s:
        (attempt,) = s.exec(db.select(db.WebhookDelivery)).all()
    assert attempt.status_code == 302 and "redirects are not followed" in attempt.error
