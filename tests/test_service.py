"""End to end: the manager, a real Celery worker, real Valkey, SQLite and the bundled model."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner
from sqlmodel import select

from core.settings import get_settings
from manage import cli
from store import db
from store.disk import DiskTier
from store.indexes import open_index
from store.memories import MemoryStore
from store.redis import connect
from workers import jobs, runtime
from workers.app import configure

BAKERY = """The Morrow Street Bakery opened in 1962 in the lower town. Its founder, Tomas Brenner,
baked rye loaves in a wood-fired oven that still stands behind the shop. The bakery is known for
its caraway bread and for the apricot tarts it sells every Sunday morning. In 1988 the bakery
doubled its floor space by taking over the cobbler's shop next door. The current owners are
Tomas's granddaughters, who added a small cafe with six tables in 2015. Flour comes from the
Aldmill cooperative up the valley, delivered every Tuesday by cart in summer and by van in winter."""

OBSERVATORY = """The Hallin Ridge Observatory stands on the bare hill north of the town. Its great
refracting telescope was built by the instrument maker Ilse Varga in 1931, who ground the
forty-centimetre lens herself over two winters. The dome turns on iron wheels and was restored
in 1977 after a storm tore part of the copper roof away. Every clear Friday evening the
observatory opens to visitors, and volunteers show the rings of Saturn and the craters of the Moon.
Weather records have been kept at the observatory without interruption since 1932."""

LIGHTHOUSE = """The Gull Point lighthouse was lit in 1781. Its first keeper, Amos Pell, kept the
lamp burning with whale oil and logged every ship that passed the point."""


def cli_run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def service(clean_home, valkey_url, redis_client, monkeypatch, tmp_path):
    """Settings for a fresh home, Valkey and SQLite, and a worker running in this process."""
    monkeypatch.setenv("MEMORAG_REDIS_URL", valkey_url)
    monkeypatch.setenv("MEMORAG_DATABASE_URL", f"sqlite:///{tmp_path / 'records.db'}")
    monkeypatch.setenv("MEMORAG_BETA", "4")
    runtime.reset()
    app = configure()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield tmp_path
    runtime.reset()
    db.reset_engines()


def wait_for(predicate, timeout: float = 300.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.model
def test_two_documents_one_knowledge_base_answer_feedback_and_isolation(service):
    tmp = service
    assert cli_run("kb", "create", "town").exit_code == 0
    ingested = cli_run(
        "ingest", "town", write(tmp, "bakery.txt", BAKERY), write(tmp, "observatory.txt", OBSERVATORY), "--wait"
    )
    assert ingested.exit_code == 0, ingested.output
    with db.session() as s:
        docs = {d.name: d for d in s.exec(select(db.Document))}
    assert {d.status for d in docs.values()} == {"ready"}
    observatory = docs["observatory.txt"].public_id

    again = cli_run("ingest", "town", write(tmp, "copy.txt", BAKERY))  # same content, another name
    assert again.exit_code == 0 and "already in town as bakery.txt (ready)" in again.output
    with db.session() as s:
        assert len(s.exec(select(db.Document)).all()) == 2

    asked = cli_run("ask", "town", "Who built the great refracting telescope of the observatory?", "--wait")
    assert asked.exit_code == 0, asked.output
    query_id = asked.output.splitlines()[0]
    with db.session() as s:
        answer = s.exec(select(db.Answer)).one()
    assert answer.text and answer.model_fingerprint
    assert observatory in {e["doc_id"] for e in answer.evidence}
    assert any("Ilse Varga" in e["text"] for e in answer.evidence)
    assert set(answer.timings) >= {"rehydrate", "clues", "retrieval", "answer"}
    assert f"evidence {observatory} observatory.txt" in asked.output
    varga = next(e for e in answer.evidence if "Ilse Varga" in e["text"])  # where the passage stands, shown too
    assert varga["context"] and f"[{varga['context']}]" in asked.output
    # the answer is the documents' own sentence, cited to its characters, with the name marked inside it
    assert (answer.reader, answer.supported) == ("sentence", True)
    cited = answer.citation
    assert cited["doc_id"] == observatory and cited["document"] == "observatory.txt"
    assert OBSERVATORY[cited["char_start"] : cited["char_end"]] == cited["quote"]
    assert answer.text == " ".join(cited["quote"].split()) and "Ilse Varga" in answer.text
    assert cited["span"]["text"] in cited["quote"] and cited["citations"][0]["quote"] == cited["quote"]
    assert f"({cited['chunk_id']} observatory.txt, chars {cited['char_start']}-{cited['char_end']}" in asked.output
    assert "clue:" not in asked.output and answer.clues  # clues are kept, shown on request
    assert "clue:" in cli_run("result", query_id, "--show-clues").output

    assert cli_run("feedback", query_id, "--bad", "--answer", "Ilse Varga", "--comment", "name it").exit_code == 0
    with db.session() as s:
        feedback = s.exec(select(db.Feedback)).one()
    assert (feedback.rating, feedback.corrected_answer, feedback.query_id) == (-1, "Ilse Varga", answer.query_id)

    shown = cli_run("result", query_id, "--json")
    assert shown.exit_code == 0 and '"status": "done"' in shown.output

    assert cli_run("kb", "create", "coast").exit_code == 0
    assert cli_run("ingest", "coast", write(tmp, "lighthouse.txt", LIGHTHOUSE), "--wait").exit_code == 0
    other = cli_run("ask", "coast", "Who built the telescope?", "--wait", "--task", "memorag")
    assert other.exit_code == 0, other.output
    with db.session() as s:
        query = s.exec(select(db.Query).where(db.Query.text == "Who built the telescope?")).one()
        row = s.exec(select(db.Answer).where(db.Answer.query_id == query.id)).one()
        coast_docs = {d.public_id for d in s.exec(select(db.Document).where(db.Document.kb_id == query.kb_id))}
    assert row.evidence and {e["doc_id"] for e in row.evidence} <= coast_docs
    assert not any("Varga" in e["text"] or "Bakery" in e["text"] for e in row.evidence)
    # the lighthouse's knowledge base does not say who built the telescope: declined, nothing invented
    assert row.supported is False and row.text.startswith("The documents do not answer this question.")
    assert "not shown as an answer:" in other.output


@pytest.mark.model
def test_missing_corrupt_and_foreign_memories_are_rebuilt_and_the_query_answered(service):
    tmp = service
    cli_run("kb", "create", "town")
    assert cli_run("ingest", "town", write(tmp, "observatory.txt", OBSERVATORY), "--wait").exit_code == 0
    memories = MemoryStore(connect())  # the hot tier alone, as Redis holds it
    disk = DiskTier(get_settings().memory_tier_dir)
    manifest = memories.manifest("town", "d1")
    memories.client.setrange(f"{memories.chunk_key('town', 'd1', manifest.version, 0)}", 100, b"garbage")
    asked = cli_run("ask", "town", "When was the dome restored?", "--wait", "--task", "qa")
    assert asked.exit_code == 0, asked.output
    assert memories.get("town", "d1")[1].version == manifest.version  # the disk copy replaced the damaged one

    memories.client.setrange(f"{memories.chunk_key('town', 'd1', manifest.version, 0)}", 100, b"garbage")
    disk.data_path("town", "d1", manifest.version).write_bytes(b"garbage")
    asked = cli_run("ask", "town", "When was the dome restored?", "--wait", "--task", "qa")
    assert asked.exit_code == 0, asked.output
    rebuilt = memories.manifest("town", "d1")
    assert rebuilt.version != manifest.version  # no intact copy anywhere: formed again from the text
    memories.get("town", "d1")  # checks out again
    assert disk.get("town", "d1")[1]["version"] == rebuilt.version

    memories.delete("town", "d1")
    disk.delete("town", "d1")
    assert cli_run("ask", "town", "When was the dome restored?", "--wait", "--task", "qa").exit_code == 0
    assert memories.exists("town", "d1")

    # A late attempt (its worker was cut off while another answered) runs to the end and writes nothing.
    with db.session() as s:
        query = s.exec(select(db.Query).order_by(db.Query.id.desc())).first()
        answer = s.exec(select(db.Answer).where(db.Answer.query_id == query.id)).one()
        query.status = db.Status.processing  # as the late attempt's first write leaves it
        s.add(query)
    assert jobs.answer_query(query.id) == {"query": query.public_id, "status": "already answered"}
    with db.session() as s:
        assert s.exec(select(db.Answer).where(db.Answer.query_id == query.id)).one().model_dump() == answer.model_dump()
        assert s.get(db.Query, query.id).status == db.Status.done


@pytest.mark.model
def test_adding_a_document_keeps_the_others_and_removing_one_drops_its_chunks_and_memory(service):
    tmp = service
    cli_run("kb", "create", "town")
    assert cli_run("ingest", "town", write(tmp, "bakery.txt", BAKERY), "--wait").exit_code == 0
    memories, index = MemoryStore(connect()), open_index(connect(), runtime.runtime().settings)
    first = memories.manifest("town", "d1").version
    assert cli_run("ingest", "town", write(tmp, "observatory.txt", OBSERVATORY), "--wait").exit_code == 0
    assert memories.manifest("town", "d1").version == first  # not rebuilt
    both = index.count("town")

    removed = cli_run("remove", "d1")
    assert removed.exit_code == 0, removed.output
    assert not memories.exists("town", "d1") and memories.exists("town", "d2")
    with db.session() as s:
        d2_chunks = s.get(db.Document, 2).chunk_count
    assert index.count("town") == d2_chunks < both
    listed = cli_run("docs", "town")
    assert "d1" not in listed.output and "d2\tready\tobservatory.txt" in listed.output


def test_a_question_to_a_knowledge_base_still_processing_says_which_documents(service):
    cli_run("kb", "create", "town")
    with db.session() as s:
        kb = s.exec(select(db.KnowledgeBase)).one()
        s.add(db.Document(kb_id=kb.id, name="big.txt", text="x", content_hash="h", status="processing"))
    asked = cli_run("ask", "town", "What happened?")
    assert asked.exit_code == 2
    assert "has no ready documents (still processing: d1 big.txt)" in asked.output
