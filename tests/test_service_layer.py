"""The service layer the command line and the API share: typed results, typed refusals, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import select

from service import Conflict, Invalid, NotFound, NoWorker, bases, documents, feedback, queries
from store import db

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(records):
    return records


def test_knowledge_bases_are_created_once_listed_shown_and_deleted(env):
    bases.create_kb("notes", "meeting notes")
    with pytest.raises(Conflict, match="already exists"):
        bases.create_kb("notes")
    with pytest.raises(Invalid, match="not a valid name"):
        bases.create_kb("no spaces please")
    [summary] = bases.list_kbs()
    assert (summary.name, summary.description, summary.documents) == ("notes", "meeting notes", {})
    detail = bases.show_kb("notes")
    assert (detail.documents, detail.ready, detail.queries) == (0, 0, 0)
    assert bases.delete_kb("notes") == 0 and bases.list_kbs() == []
    with pytest.raises(NotFound, match="no knowledge base named 'notes'"):
        bases.show_kb("notes")


def test_refusals_name_the_problem_before_anything_is_queued(env):
    bases.create_kb("kb")
    with pytest.raises(Invalid, match="the question is empty"):
        queries.ask("kb", "   ")
    with pytest.raises(Invalid, match=r"the question is 2001 characters; the limit is 2000"):
        queries.ask("kb", "x" * 2001)
    with pytest.raises(Invalid, match="unknown task 'poem'"):
        queries.ask("kb", "Why?", task="poem")
    with pytest.raises(Invalid, match=r"has no ready documents \(add one with"):
        queries.ask("kb", "Why?")
    with pytest.raises(NoWorker, match="no worker is serving the 'memory' queue"):
        documents.add_documents("kb", [("a.txt", "Some text.")])
    with pytest.raises(NotFound, match="no knowledge base named 'other'"):
        documents.add_documents("other", [("a.txt", "Some text.")])
    with pytest.raises(Invalid, match="not an id"):
        queries.status("x1")
    with pytest.raises(NotFound, match="no query q7"):
        queries.status("q7")
    with pytest.raises(Invalid, match="is a query; remove takes a document"):
        documents.remove_document("q3")
    with pytest.raises(Invalid, match="say --good or --bad"):
        feedback.give_feedback("q1", None)
    with pytest.raises(NotFound, match="no query q1"):
        feedback.give_feedback("q1", True)
    with db.session() as s:
        assert s.exec(select(db.Query)).all() == [] and s.exec(select(db.Document)).all() == []


def test_the_service_and_the_command_line_load_no_model():
    """Listing or refusing must not pay for torch: the faces import service/ and agent/choices only."""
    code = "import sys, manage, service.queries, service.documents; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
