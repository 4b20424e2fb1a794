"""A dead worker's work comes back in minutes with the broker's visibility timeout at its default (2 hours):
real worker processes SIGKILLed mid-question and mid-ingestion, a document that kills every worker it
reaches, a store wiped under a question. ops/bench/recovery.py runs the same at full default settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "ops" / "bench"))  # after the project: ops/bench/service.py is a script

import recovery  # noqa: E402
from deployment import deployment  # noqa: E402

from core.settings import Settings  # noqa: E402

BOUND_S = 180  # the promise: answered within 3 minutes


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_long_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MEMORAG_HOME", "MEMORAG_REDIS_URL", "MEMORAG_DATABASE_URL", "MEMORAG_MODEL"):
            patch.delenv(name, raising=False)
        home = tmp_path_factory.mktemp("recovery")
        # The visibility timeout at its default; the reconcile pass every 3 s and the grace at its 10 s floor
        # (the heartbeat's two beats) to keep the suite short.
        with deployment(home, str(tiny_long_model_dir), task_timeout_s=Settings().task_timeout_s,
                        reconcile_interval=3, grace_s=10) as running:  # fmt: skip
            yield running


def test_the_only_worker_killed_mid_question_then_started_again(live):
    result = recovery.question_kill(live, timeout=BOUND_S)
    assert result["status"] == "done" and result["recover_s"] < BOUND_S, result


def test_one_of_two_workers_killed_mid_question_and_the_other_answers(live):
    result = recovery.question_kill_two(live, timeout=BOUND_S)
    assert result["status"] == "done" and result["recover_s"] < BOUND_S, result


def test_the_only_worker_killed_mid_ingestion(live):
    result = recovery.ingest_kill(live, timeout=BOUND_S)
    assert result["status"] == "ready" and result["recover_s"] < BOUND_S, result


def test_a_document_that_kills_every_worker_ends_failed_and_the_next_is_ingested(live):
    result = recovery.poison(live, timeout=300)
    assert result["status"] == "failed" and result["kills"] == Settings().max_deliveries, result
    assert "the worker died 3 times while ingesting this document" in result["error"]
    assert "MEMORAG_MAX_DOCUMENT_TOKENS" in result["error"] and result["next_document"] == "ready", result


def test_a_question_asked_right_after_a_store_wipe_is_answered_after_the_repair(live):
    result = recovery.flushall(live, timeout=BOUND_S)
    assert result["status"] == "done" and not result["declined"] and result["evidence"] > 0, result
