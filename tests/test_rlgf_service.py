"""RLGF as a service: imported feedback, a retrain run on the train queue, versions, and the hot swap.

A real Celery worker (solo, in this process) on real Valkey and SQLite, with a
tiny random model so that training and a dozen generations take seconds.
"""

from __future__ import annotations

import json

import pytest
import torch
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner
from sqlmodel import select

from agent import adapters
from agent.retrieval import ADAPTER_FUSION, DEFAULT_FUSION
from manage import cli
from store import db
from store.adapters import AdapterNotFound, AdapterRegistry
from tests.conftest import SHARED_DATA
from workers import runtime
from workers.app import configure


def cli_run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def records(clean_home, valkey_url, redis_client, monkeypatch, tmp_path):
    monkeypatch.setenv("MEMORAG_REDIS_URL", valkey_url)
    monkeypatch.setenv("MEMORAG_DATABASE_URL", f"sqlite:///{tmp_path / 'records.db'}")
    db.reset_engines()
    yield redis_client
    db.reset_engines()


def test_registry_publishes_promotes_and_rolls_back(records):
    registry = AdapterRegistry(records)
    assert registry.promoted() is None
    first = registry.publish(b"weights-1", base_fingerprint="f", metrics={"recall@5": 0.4})
    second = registry.publish(b"weights-2", base_fingerprint="f", metrics={"recall@5": 0.5})
    assert first != second and registry.weights(second) == b"weights-2"
    registry.promote(first)
    registry.promote(second)
    assert registry.promoted() == second
    assert [v.version for v in registry.versions() if v.promoted] == [second]
    assert registry.rollback() == first and registry.promoted() == first
    assert registry.rollback() is None and registry.promoted() is None
    with pytest.raises(AdapterNotFound):
        registry.rollback()
    with pytest.raises(AdapterNotFound):
        registry.promote("a99-nothing")


def _qmsum_slice(tmp_path) -> str:
    """Two meetings cut after the evidence of their first four queries (real questions, short transcripts).

    Of the first eight meetings, the two whose four queries are answered earliest: about 26k characters
    in all, where the first two meetings needed 107k and the embedding of it was a third of this file's time.
    """
    cut = []
    for line in (SHARED_DATA / "qmsum" / "val.jsonl").read_text().splitlines()[:8]:
        m = json.loads(line)
        queries = sorted(m["specific_query_list"], key=lambda q: max(int(e) for _, e in q["relevant_text_span"]))[:4]
        end = max(int(e) for q in queries for _, e in q["relevant_text_span"])
        m["meeting_transcripts"], m["specific_query_list"] = m["meeting_transcripts"][: end + 5], queries
        cut.append((sum(len(turn["content"]) for turn in m["meeting_transcripts"]), json.dumps(m)))
    path = tmp_path / "slice.jsonl"
    path.write_text("\n".join(text for _, text in sorted(cut)[:2]))
    return str(path)


@pytest.fixture
def service(records, trainable_model_dir, monkeypatch, tmp_path):
    for name, value in {
        "MODEL": str(trainable_model_dir),
        "BETA": "8",
        "RLGF_STEPS": "3",
        "RLGF_SFT_STEPS": "3",
        "RLGF_CANDIDATES": "2",
        "RLGF_HELDOUT": "0.3",
        "RETRAIN_MIN_FEEDBACK": "100",
    }.items():
        monkeypatch.setenv(f"MEMORAG_{name}", value)
    runtime.reset()
    app = configure()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield tmp_path
    runtime.reset()


def test_import_retrain_promote_and_hot_swap(service, records):
    out = cli_run("feedback", "import", _qmsum_slice(service), "--format", "qmsum", "--kb", "meetings", "--wait")
    assert "8 feedback rows imported into meetings" in out
    assert "0 feedback rows imported" in cli_run(
        "feedback", "import", _qmsum_slice(service), "--format", "qmsum", "--kb", "meetings"
    )
    with db.session() as s:
        rows = s.exec(select(db.Feedback)).all()
    assert len(rows) == 8 and all(r.evidence and r.corrected_answer for r in rows)

    # Beat's call: too little new feedback, nothing trains.
    assert "skipped: 8 new feedback rows, 100 needed" in cli_run("retrain", "--if-enough", "--wait")
    out = cli_run("retrain", "--wait")
    with db.session() as s:
        run = s.exec(select(db.TrainingRun)).one()
        version = s.exec(select(db.AdapterVersion)).one()
    assert run.status == db.Status.done and run.decision in ("promoted", "kept") and run.reason
    assert run.adapter_version == version.version and f"{version.version} {run.decision}" in out
    assert run.metrics["train_examples"] + run.metrics["heldout_examples"] == 8 and run.metrics["heldout_examples"] > 0
    assert run.metrics["last_feedback_id"] == max(r.id for r in rows) and len(run.losses) == run.metrics["steps"]
    assert "recall@5" in run.metrics["candidate"] and "answer_loglik" in run.metrics["current"]
    # The base model was measured as queries see it; the candidate with the fusion it will be queried with.
    assert run.metrics["fusions"] == {"current": DEFAULT_FUSION, "candidate": ADAPTER_FUSION}
    if run.decision == "promoted":
        cli_run("adapters", "rollback")
    assert "none (base model writes clues)" in cli_run("adapters", "list")

    # Queries before and after a promotion, in the same running worker.
    cli_run("ask", "meetings", "What did the group decide?", "--wait")
    cli_run("adapters", "promote", version.version)
    cli_run("ask", "meetings", "What was said about the remote control?", "--wait")
    cli_run("adapters", "rollback")
    cli_run("ask", "meetings", "Who spoke first?", "--wait")
    with db.session() as s:
        used = [a.adapter_version for a in s.exec(select(db.Answer).order_by(db.Answer.id))]
    assert used == [None, version.version, None]


def test_worker_loads_the_promoted_weights_exactly(service, records):
    """The hot swap copies the stored weights into the worker's model; a foreign adapter is refused."""
    from workers.jobs import sync_adapter

    rt = runtime.runtime()
    lm = rt.lm
    adapters.ensure_slot(lm)
    weights = {n: torch.randn_like(w) for n, w in adapters.state(lm).items()}
    registry = AdapterRegistry(records)
    data = adapters.to_bytes(weights, base_fingerprint=lm.fingerprint, spec=adapters.spec_of(lm))
    version = registry.publish(data, base_fingerprint=lm.fingerprint, metrics={})
    registry.promote(version)
    assert sync_adapter(rt) == version and adapters.loaded_version(lm) == version
    assert all(torch.equal(weights[n], w) for n, w in adapters.state(lm).items())
    assert adapters.loaded_fusion(lm) is None  # gated without a fusion of its own: queries use the default

    def publish(fusion: str) -> str:
        data = adapters.to_bytes(
            weights, base_fingerprint=lm.fingerprint, spec=adapters.spec_of(lm), info={"fusion": fusion}
        )
        version = registry.publish(data, base_fingerprint=lm.fingerprint, metrics={})
        registry.promote(version)
        return version

    gated = publish(ADAPTER_FUSION)
    assert sync_adapter(rt) == gated and adapters.loaded_fusion(lm) == ADAPTER_FUSION
    publish("a fusion from a newer release")
    assert sync_adapter(rt) is None and adapters.loaded_fusion(lm) is None  # not guessed: the base model answers

    foreign = registry.publish(
        adapters.to_bytes(weights, base_fingerprint="other", spec=adapters.spec_of(lm)),
        base_fingerprint="other",
        metrics={},
    )
    registry.promote(foreign)
    assert sync_adapter(rt) is None and adapters.loaded_version(lm) is None  # answers go on, with the base model


def test_beat_sends_retrain_to_the_train_queue_every_interval(valkey_url, redis_client, monkeypatch, tmp_path):
    """Celery beat, embedded for a few seconds with a 1 s interval, queues `memorag.retrain` on `train`."""
    import time

    from celery.beat import EmbeddedService

    monkeypatch.setenv("MEMORAG_REDIS_URL", valkey_url)
    monkeypatch.setenv("MEMORAG_RETRAIN_INTERVAL", "1")
    app = configure()
    assert app.conf.beat_schedule["retrain"]["schedule"] == 1.0
    redis_client.delete("train")
    beat = EmbeddedService(app, thread=True, schedule_filename=str(tmp_path / "beat-schedule"))
    beat.start()
    try:
        deadline = time.monotonic() + 20
        while redis_client.llen("train") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        beat.stop()
    messages = [json.loads(m) for m in redis_client.lrange("train", 0, -1)]
    assert len(messages) >= 2 and {m["headers"]["task"] for m in messages} == {"memorag.retrain"}
    redis_client.delete("train")
