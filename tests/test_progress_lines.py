"""Progress in logs: a line per stage, not one per percent."""

from __future__ import annotations

import manage


def test_line_progress_prints_stage_changes_and_throttles_percentages(capsys):
    with manage.LineProgress(every=3600) as bar:
        task = bar.add_task("doc-1: indexing", total=4)
        for pct in range(0, 101, 10):
            bar.update(task, description=f"doc-1: memory {pct}%", completed=1)
        bar.update(task, description="doc-2: memory 0%", completed=2)
        bar.update(task, completed=3)  # no new stage, throttled
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["doc-1: indexing 0/4", "doc-1: memory 0% 1/4", "doc-2: memory 0% 2/4"]


def test_line_progress_reports_again_after_the_interval(capsys):
    with manage.LineProgress(every=0) as bar:
        task = bar.add_task("training", total=None)
        bar.update(task, completed=5)
    assert capsys.readouterr().err.splitlines() == ["training", "training"]
