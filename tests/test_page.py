"""The web page in a real browser (Debian's chromium, driven by Playwright) against a real API and worker."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from celery.contrib.testing.worker import start_worker

from service import bases, keys
from store import db
from tests.conftest import free_port
from tests.test_service import OBSERVATORY
from workers import runtime
from workers.app import configure

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on this machine (ops/setup.sh installs it as root)"
)


@pytest.fixture
def served(records, monkeypatch):
    """The API on a free port in this process, and a worker."""
    import uvicorn

    from api.app import create_app

    monkeypatch.setenv("MEMORAG_BETA", "4")
    runtime.reset()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    with start_worker(configure(), pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    runtime.reset()


@pytest.mark.model
def test_upload_ask_see_the_highlighted_source_and_give_feedback(served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    bases.create_kb("town")
    key = keys.create_key("writer", "town")
    (tmp_path / "observatory.txt").write_text(OBSERVATORY)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(served + "/")
        page.fill("#key", key)
        page.click("#use-key")
        expect(page.locator("#main")).to_be_visible()
        page.set_input_files("#files", str(tmp_path / "observatory.txt"))
        page.click("#upload button")
        expect(page.locator("#documents")).to_contain_text("ready", timeout=180_000)
        page.fill("#question", "Who built the great refracting telescope?")
        page.click("#ask button")
        expect(page.locator("#result")).to_be_visible(timeout=180_000)
        answer = page.locator("#answer").inner_text()
        assert "Ilse Varga" in answer  # the document's own sentence, highlighted in its text
        assert page.locator("#source mark").inner_text() in OBSERVATORY
        bold = page.locator("#source mark b").inner_text()  # the short answer inside it, in bold and above it
        assert bold in answer and page.locator("#short").inner_text() == f"Answer: {bold}"
        assert page.locator("#evidence li").count() >= 1
        page.fill("#correction", "Ilse Varga")
        page.click("#bad")
        expect(page.locator("#feedback-status")).to_contain_text("thank you")
        assert page.evaluate("sessionStorage.getItem('memorag-key')") == key
        history = page.locator("#history")  # the question is in the history; opening it shows its answer
        expect(history).to_contain_text("Who built the great refracting telescope?")
        expect(history).to_contain_text("done")
        page.fill("#question", "")
        page.locator("#history a").first.click()
        expect(page.locator("#asked")).to_contain_text("Who built the great refracting telescope?")
        assert page.locator("#answer").inner_text() == answer
        page.on("dialog", lambda dialog: dialog.accept())  # "Remove observatory.txt ...?"
        page.click("#documents button")
        expect(page.locator("#upload-status")).to_contain_text("observatory.txt: removed")
        expect(page.locator("#documents tr")).to_have_count(0)
        browser.close()
    with db.session() as s:
        [row] = s.exec(db.select(db.Feedback)).all()
        assert (row.rating, row.corrected_answer) == (-1, "Ilse Varga")
