"""What keeps a long-lived knowledge base whole: lost work sent again, lost or corrupt stores rebuilt from the
database, bounded inputs, no password in any message, rediss:// and no pickle on any path.

The fault campaigns at full size are ``ops/bench/chaos.py``; tests/test_chaos.py runs them small.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import shutil
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner
from sqlmodel import select

from core.settings import get_settings
from manage import cli
from store import db
from store.disk import DiskTier
from store.memories import MemoryStore
from store.redis import connect
from store.vectors import EmbeddedIndex
from tests.conftest import SHARED_DATA, free_port
from workers import runtime
from workers.app import configure

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, prog_name="manage.py")


def memories_on_disk() -> DiskTier:
    return DiskTier(get_settings().memory_tier_dir)


@pytest.fixture
def worker(records, tiny_long_model_dir, monkeypatch):
    """A worker in this process serving every queue with the tiny model (faults, not answers, are the subject)."""
    monkeypatch.setenv("MEMORAG_MODEL", str(tiny_long_model_dir))
    monkeypatch.setenv("MEMORAG_RECONCILE_GRACE_S", "0")
    monkeypatch.setenv("MEMORAG_BETA", "4")
    runtime.reset()
    app = configure()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30,
                      queues=["memory", "query", "train", "control"]):  # fmt: skip
        yield records
    runtime.reset()


@contextlib.contextmanager
def serving(*queues: str):
    """A worker in this process on ``queues`` only; afterwards the app consumes every queue again (Celery keeps
    a worker's queue selection on the app)."""
    app = configure()
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=list(queues)):
            yield app
    finally:
        app.amqp.queues._consume_from = None


def wait_for(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def documents() -> list[db.Document]:
    with db.session() as s:
        return list(s.exec(select(db.Document).order_by(db.Document.id)))


def test_lost_stores_and_lost_messages_are_found_and_rebuilt_from_the_database(worker, redis_client, tmp_path):
    essay = sorted(SHARED_DATA.joinpath("needle", "essays").glob("*.txt"))[0].read_text()[:6000]
    (tmp_path / "a.txt").write_text(essay)
    (tmp_path / "b.txt").write_text(essay[::-1])
    run("kb", "create", "town")
    assert run("ingest", "town", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--wait").exit_code == 0
    before = {d.public_id: d.chunk_count for d in documents()}
    memories, index = MemoryStore(redis_client), EmbeddedIndex(redis_client)
    assert "nothing stale or being repaired" in run("status").output

    # The store is emptied (FLUSHALL): memories are still on the disk tier; with that lost too, the status names
    # what is missing and repair rebuilds it from the text.
    redis_client.flushall()
    shown = run("status").output
    assert "damaged d1: chunks: 0 of" in shown and "memory: " not in shown
    assert memories_on_disk().get("town", "d1") is not None
    shutil.rmtree(memories_on_disk().root)
    shown = run("status").output
    assert "damaged d1: chunks: 0 of" in shown and "memory: missing" in shown
    from fastapi.testclient import TestClient

    from api.app import create_app

    assert TestClient(create_app()).get("/readyz").json()["repair"] == {"stale": 0, "damaged": 2, "repairing": 0}
    repaired = run("repair", "town")
    assert repaired.exit_code == 0 and "sent again: 2" in repaired.output
    assert {d.status for d in documents()} <= {"repairing", "ready"}
    wait_for(lambda: redis_client.keys("memorag:worker:*"), timeout=10)  # the heartbeat comes back within 5 s
    asked = run("ask", "town", "What is this about?")  # still answerable while it is repaired
    assert asked.exit_code == 0
    wait_for(lambda: {d.status for d in documents()} == {"ready"})
    wait_for(lambda: "\tdone" in run("status", asked.output.strip()).output)
    assert {d: index.document_counts("town", [d])[d] for d in before} == before
    assert all(memories.exists("town", d) for d in before)
    assert all("repair_s" in d.timings for d in documents())

    # Bytes change in a memory (both tiers) and a vector entry: repair's checks find both, and only they are
    # rebuilt (one damaged tier is mended from the other: tests/test_memory_tiers.py).
    manifest = memories.manifest("town", "d1")
    redis_client.setrange(memories.chunk_key("town", "d1", manifest.version, 0), 64, b"\xff\xfe")
    [file] = memories_on_disk().root.rglob("d1.*.safetensors")
    file.write_bytes(b"\0" * file.stat().st_size)
    entry = redis_client.hget(index.key("town", "vectors"), "d2#0")
    redis_client.hset(index.key("town", "vectors"), "d2#0", bytes([entry[0] ^ 1]) + entry[1:])
    quick = run("repair", "town", "--quick").output  # counts only: neither is visible to it
    assert "nothing to repair" in quick
    found = run("repair", "town").output
    assert "damaged d1: memory: memory file for town/d1 on disk does not match its checksum" in found
    assert f"damaged d2: chunks: {before['d2'] - 1} of {before['d2']} intact" in found
    wait_for(lambda: {d.status for d in documents()} == {"ready"})
    assert memories.manifest("town", "d1").version != manifest.version
    assert EmbeddedIndex(redis_client).verify("town", list(before)) == before
    assert "nothing to repair" in run("repair", "town").output

    # A question whose message the broker lost (never delivered): the reconcile task sends it again.
    with db.session() as s:
        kb = s.exec(select(db.KnowledgeBase)).one()
        lost = db.Query(kb_id=kb.id, text="Who wrote this?", task_id=uuid.uuid4().hex)
        lost.created_at = db.utcnow() - timedelta(minutes=5)
        s.add(lost)
        s.flush()
        lost_id = lost.id
    from workers.tasks import reconcile

    outcome = reconcile.apply_async().get(timeout=60)
    assert outcome["stale_queries"] == [f"q{lost_id}"]
    wait_for(lambda: run("status", f"q{lost_id}").output.split("\t")[1].strip() == "done")
    with db.session() as s:
        assert len(s.exec(select(db.Answer).where(db.Answer.query_id == lost_id)).all()) == 1


def test_reindex_rebuilds_the_index_from_the_database_with_progress(worker, redis_client, tmp_path):
    run("kb", "create", "town")
    for i, essay in enumerate(sorted(SHARED_DATA.joinpath("needle", "essays").glob("*.txt"))[:3]):
        (tmp_path / f"{i}.txt").write_text(essay.read_text()[:3000])
    assert run("ingest", "town", *(str(p) for p in sorted(tmp_path.glob("*.txt"))), "--wait").exit_code == 0
    index = EmbeddedIndex(redis_client)
    expected = {d.public_id: d.chunk_count for d in documents()}
    index.drop("town")
    probe = np.full((1, 384), 384**-0.5, dtype=np.float32)
    assert index.search("town", probe, 5) == [[]]
    done = run("reindex", "town")
    assert done.exit_code == 0, done.output
    assert f"town: 3 documents, {sum(expected.values())} chunks indexed" in done.output
    assert index.document_counts("town", list(expected)) == expected
    hits = index.search("town", probe, 50)[0]  # rebuilt chunks carry their document's title
    assert hits and all(chunk.context for chunk, _ in hits)
    assert run("reindex", "nowhere").output.startswith("error: no knowledge base named 'nowhere'")


def test_inputs_over_their_bounds_are_refused_before_anything_is_queued(worker, tmp_path, monkeypatch):
    from pypdf import PdfWriter

    run("kb", "create", "town")
    long = tmp_path / "long.txt"
    long.write_text("word " * 400)
    monkeypatch.setenv("MEMORAG_MAX_DOCUMENT_TOKENS", "100")
    refused = run("ingest", "town", str(long))
    assert refused.exit_code == 2
    line = refused.output.strip()
    assert (
        line.startswith("error: long.txt: 40")
        and line.endswith(" tokens is over the 100 token limit (MEMORAG_MAX_DOCUMENT_TOKENS)")
        and "\n" not in line
    )
    pdf = PdfWriter()
    for _ in range(3):
        pdf.add_blank_page(width=200, height=200)
    pdf.write(tmp_path / "three.pdf")
    monkeypatch.setenv("MEMORAG_MAX_PDF_PAGES", "2")
    paged = run("ingest", "town", str(tmp_path / "three.pdf"))
    assert paged.exit_code == 2 and "3 pages is over the 2 page limit (MEMORAG_MAX_PDF_PAGES)" in paged.output
    monkeypatch.setenv("MEMORAG_MAX_DOCUMENT_MB", "0.001")
    assert "MB limit (MEMORAG_MAX_DOCUMENT_MB)" in run("ingest", "town", str(long)).output
    assert documents() == []

    from fastapi.testclient import TestClient

    from api.app import create_app
    from service import keys

    key = keys.create_key("writer", "town")
    client = TestClient(create_app())
    monkeypatch.setenv("MEMORAG_MAX_DOCUMENT_MB", "20")
    upload = client.post("/v1/kbs/town/documents", headers={"Authorization": f"Bearer {key}"},
                         files={"files": ("long.txt", long.read_bytes(), "text/plain")})  # fmt: skip
    assert upload.status_code == 413 and "token limit" in upload.json()["error"]
    assert documents() == []


def test_a_password_in_a_store_url_never_reaches_a_message_or_a_log(records, monkeypatch, caplog):
    from core.redact import RedactingFilter, redact

    assert redact("redis://:hunter2@h:6379/0 and postgresql://u:pw@h/db?password=x") == (
        "redis://:***@h:6379/0 and postgresql://u:***@h/db?password=***"
    )
    monkeypatch.setenv("MEMORAG_REDIS_URL", f"rediss://:hunter2@127.0.0.1:{free_port()}/0")
    for args in (["status"], ["ask", "x", "why?"], ["repair"], ["reindex", "x"]):
        out = CliRunner().invoke(cli, args)
        assert "hunter2" not in out.output and "error:" in out.output, (args, out.output)
    monkeypatch.setenv("MEMORAG_DATABASE_URL", f"postgresql://u:hunter2@127.0.0.1:{free_port()}/x")
    out = CliRunner().invoke(cli, ["kb", "list"])
    assert out.exit_code == 2 and "hunter2" not in out.output and "u:***@127.0.0.1" in out.output

    record = logging.LogRecord("w", logging.ERROR, __file__, 1, "cannot reach %s", ("redis://:hunter2@h/0",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "cannot reach redis://:***@h/0"

    from fastapi.testclient import TestClient

    from api.app import create_app

    ready = TestClient(create_app()).get("/readyz")
    assert ready.status_code == 503 and "hunter2" not in ready.text


def test_rediss_with_a_password_carries_the_broker_results_and_stores(records, tmp_path, monkeypatch):
    """TLS Redis (Debian's redis-server; the bundled Valkey is built without TLS)."""
    server_bin = Path("/usr/bin/redis-server")
    if not server_bin.exists():
        pytest.skip("redis-server is not installed; the TLS test needs it")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    server = subprocess.Popen([server_bin, "--port", "0", "--tls-port", str(port), "--tls-cert-file", cert,
                               "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no",
                               "--requirepass", "hunter2", "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"rediss://:hunter2@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
        monkeypatch.setenv("MEMORAG_REDIS_URL", url)
        client = wait_for(lambda: _connected(url), timeout=10)
        MemoryStore(client).put("kb", "d1", b"bytes", {})
        assert MemoryStore(client).get("kb", "d1")[0] == b"bytes"
        with serving("control"):
            from workers.tasks import reconcile

            assert reconcile.apply_async().get(timeout=30)["fixed"] is True
        shown = run("status")
        assert shown.exit_code == 0 and "hunter2" not in shown.output
    finally:
        server.terminate()
        server.wait(timeout=10)


def _connected(url: str):
    try:
        return connect(url)
    except Exception:
        return None


def test_no_pickle_on_any_path(records):
    """Celery speaks JSON only, and a pickled message is refused unread; no project code unpickles."""
    app = configure()
    assert (app.conf.task_serializer, app.conf.result_serializer, list(app.conf.accept_content)) == (
        "json", "json", ["json"]
    )  # fmt: skip
    unpicklers = {("pickle", "load"), ("pickle", "loads"), ("torch", "load"), ("joblib", "load"), ("dill", "load")}
    for path in ROOT.glob("**/*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(names), f"{path}: imports {names}"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in unpicklers, f"{path}:{node.lineno} {node.value.id}.{node.attr}"
    with serving("control"):
        from workers.tasks import reconcile

        pickled = reconcile.apply_async(serializer="pickle")
        with pytest.raises(Exception, match=r"timed out|Timeout"):
            pickled.get(timeout=4)  # the worker refuses to deserialize it: never run, never answered
        assert reconcile.apply_async().get(timeout=30)["fixed"] is True


def test_a_worker_whose_model_cannot_load_fails_the_document_with_the_reason(records, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORAG_MODEL", str(tmp_path / "no-model-here"))
    runtime.reset()
    (tmp_path / "a.txt").write_text("The lighthouse was lit in 1781.")
    with serving("memory", "control"):
        run("kb", "create", "town")
        done = run("ingest", "town", str(tmp_path / "a.txt"), "--wait")
    runtime.reset()
    [doc] = documents()
    assert doc.status == "failed" and "no-model-here" in doc.error, doc.error
    assert done.exit_code == 2 and "no-model-here" in done.output
