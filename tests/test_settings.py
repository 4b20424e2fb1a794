"""Settings come from MEMORAG_* variables; a bad one is one clear line, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import InvalidSettings, get_settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("MEMORAG_TOP_K", raising=False)
    assert get_settings().top_k == 5
    monkeypatch.setenv("MEMORAG_TOP_K", " 8 ")
    assert get_settings().top_k == 8
    monkeypatch.setenv("MEMORAG_TOP_K", "")  # empty means unset
    assert get_settings().top_k == 5


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TOP_K", "abc", "MEMORAG_TOP_K='abc': should be a valid integer"),
        ("TOP_K", "0", "MEMORAG_TOP_K='0': should be greater than or equal to 1"),
        ("READER", "guess", "MEMORAG_READER='guess': should be 'auto', 'extract' or 'generate'"),
        ("RLGF_HELDOUT", "1.5", "MEMORAG_RLGF_HELDOUT='1.5': should be less than 1"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_should_be(monkeypatch, name, value, says):
    monkeypatch.setenv(f"MEMORAG_{name}", value)
    with pytest.raises(InvalidSettings) as caught:
        get_settings()
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)


def test_replace_checks_like_the_environment(monkeypatch):
    monkeypatch.delenv("MEMORAG_BETA", raising=False)
    settings = get_settings()
    assert settings.replace(beta=8).beta == 8 and settings.beta == 16
    with pytest.raises(InvalidSettings, match="MEMORAG_BETA=0"):
        settings.replace(beta=0)


def test_the_cli_refuses_a_bad_setting_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEMORAG_HOME": str(tmp_path), "MEMORAG_TOP_K": "abc"}
    done = subprocess.run(
        [sys.executable, "manage.py", "status", "q1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: MEMORAG_TOP_K='abc': should be a valid integer")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
