"""The manager's memory commands: happy path and every bad input, one clear line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from manage import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(clean_home, valkey_url, tiny_model_dir, monkeypatch, redis_client):
    monkeypatch.setenv("MEMORAG_REDIS_URL", valkey_url)
    monkeypatch.setenv("MEMORAG_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEMORAG_DTYPE", "fp32")
    return clean_home


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_build_show_ask_list_delete(env, tmp_path):
    doc = tmp_path / "story.txt"
    doc.write_text("The lighthouse keeper counted ships every night. " * 60)
    built = run("memory", "build", str(doc), "--beta", "8", "--key", "story")
    assert built.exit_code == 0, built.output
    assert "memory 'story'" in built.output and "(beta 8)" in built.output
    shown = run("memory", "show", "story")
    assert shown.exit_code == 0 and "x (beta 8)" in shown.output and "document tokens: 481" in shown.output
    assert run("memory", "list").output.split() == ["story"]
    asked = run("memory", "ask", "story", "Who counted ships?", "--task", "memorag")
    assert asked.exit_code == 0, asked.output
    assert "evidence [story #0" in asked.output and "(memorag; route" in asked.output and "rehydrate" in asked.output
    assert run("memory", "delete", "story").exit_code == 0
    assert run("memory", "list").output.strip() == ""


def test_build_with_a_chosen_scorer_records_it(env, tmp_path):
    from agent.memory.scorers import SCORERS
    from manage import MEMORY_SCORERS

    assert set(MEMORY_SCORERS) == set(SCORERS)  # the CLI offers exactly the library's scorers
    doc = tmp_path / "codes.txt"
    fact = "The access code for the north archive is 4721. "
    doc.write_text("The ferry leaves at dawn. " * 40 + fact + "Gulls. " * 40)
    built = run("memory", "build", str(doc), "--beta", "4", "--key", "codes", "--scorer", "surprisal")
    assert built.exit_code == 0, built.output
    assert "window / scorer: 1024 / surprisal" in run("memory", "show", "codes").output
    refused = CliRunner().invoke(cli, ["memory", "build", str(doc), "--scorer", "psychic"])
    assert refused.exit_code == 2 and "'psychic' is not one of" in refused.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("   \n"), "is empty"),
        (lambda p: p.write_bytes(b"\x89PNG\x00\x00binary"), "looks binary"),
    ],
)
def test_bad_files_are_one_line_errors(env, tmp_path, make, message):
    path = tmp_path / "input.txt"
    make(path)
    result = run("memory", "build", str(path))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_oversized_file_is_refused(env, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORAG_MAX_DOCUMENT_MB", "0.001")
    path = tmp_path / "big.txt"
    path.write_text("word " * 1000)
    result = run("memory", "build", str(path))
    assert result.exit_code == 2 and "over the 0.001 MB limit" in result.output


def test_unknown_memory_and_empty_question(env):
    assert "no memory named 'nope'" in run("memory", "show", "nope").output
    result = run("memory", "ask", "nope", "  ")
    assert result.exit_code == 2 and "question is empty" in result.output


def test_unreachable_redis_names_the_url(env, monkeypatch):
    monkeypatch.setenv("MEMORAG_REDIS_URL", "redis://127.0.0.1:9/0")
    result = run("memory", "list")
    assert result.exit_code == 2 and "redis://127.0.0.1:9/0" in result.output


def test_subprocess_error_has_no_traceback(env):
    result = subprocess.run(
        [sys.executable, "manage.py", "memory", "build", "/no/such/file.txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: /no/such/file.txt: no such file"


def test_models_prepare_is_a_no_op_when_ready(env):
    result = run("models", "prepare")
    assert result.exit_code == 0 and "nothing to do" in result.output
