"""What every command shares: one-line errors, progress that suits the terminal, one wait loop."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from core.redact import redact

console = Console(stderr=True)
USAGE_ERROR = 2


class Failure(click.ClickException):
    exit_code = USAGE_ERROR

    def show(self, file=None) -> None:
        click.echo(f"error: {redact(self.format_message())}", err=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    from service.refusals import KNOWN

    return (*KNOWN, ValueError)


class Crash(Failure):
    """A fault of ours, not of the input: one line here, the traceback in the log."""

    exit_code = 1


UNEXPECTED = "unexpected"  # how a Crash's line starts (the fuzz campaign counts them)


class FriendlyGroup(click.Group):
    """Turn the project's own exceptions into one clear line, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except _known_errors() as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise Failure(str(message)) from exc
        except Exception as exc:
            raise Crash(f"{UNEXPECTED} {type(exc).__name__}: {exc} (the traceback is in {_log(exc)})") from exc


def _log(exc: Exception) -> str:
    """Append the traceback to MEMORAG_HOME/logs/manage.log, passwords redacted; returns the path."""
    import traceback

    from core.settings import get_settings

    try:
        path = get_settings().log_dir / "manage.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(redact("".join(traceback.format_exception(exc))) + "\n")
        return str(path)
    except Exception:  # settings or disk unusable: the line above is all there is
        return "nowhere (the log could not be written)"


class LineProgress:
    """Progress for output that is not a terminal (logs, CI, nohup), where a live bar prints nothing
    until it ends: one plain line when a task's stage changes, otherwise at most every ``every`` s."""

    def __init__(self, every: float = 15.0) -> None:
        self.every = every
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        task = len(self.tasks)
        self.tasks[task] = {"description": description, "completed": 0, "total": total, "shown": 0.0}
        self._show(task)
        return task

    def update(
        self,
        task: int,
        *,
        description: str | None = None,
        completed: float | None = None,
        total: float | None = None,
        **_,
    ) -> None:
        state = self.tasks[task]
        changed = description is not None and _stage(description) != _stage(state["description"])
        for key, value in (("description", description), ("completed", completed), ("total", total)):
            if value is not None:
                state[key] = value
        if changed or time.monotonic() - state["shown"] >= self.every:
            self._show(task)

    def _show(self, task: int) -> None:
        state = self.tasks[task]
        state["shown"] = time.monotonic()
        count = f" {state['completed']:.0f}/{state['total']:.0f}" if state["total"] else ""
        console.print(f"{state['description']}{count}", highlight=False)


def _stage(description: str) -> str:
    """A description without its percentages: "memory 40%" and "memory 41%" are one stage."""
    return re.sub(r"\d+(\.\d+)?%", "%", description)


def progress() -> Progress | LineProgress:
    """A live bar on a terminal, plain progress lines anywhere else."""
    if not console.is_terminal:
        return LineProgress()
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@dataclass(frozen=True)
class Step:
    """Where one followed piece of work stands."""

    description: str
    done: float = 0
    total: float | None = None
    finished: bool = False
    failure: str | None = None  # why it failed, once finished


def follow(
    keys: Sequence[Hashable],
    poll: Callable[[Hashable], Step],
    *,
    interval: float = 0.3,
    timeout: float | None = None,
    late: Callable[[], str] = lambda: "still running",
) -> list[str]:
    """Show each key's progress until every one finishes; returns the failures.

    Every command that waits (ingest --wait, ask --wait, retrain --wait, feedback
    import --wait) waits here; ``timeout`` seconds later it stops with ``late()``.
    """
    failures: list[str] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    with progress() as bar:
        pending = {key: bar.add_task(poll(key).description, total=None) for key in keys}
        while pending:
            for key, task in list(pending.items()):
                step = poll(key)
                total = step.total or (step.done if step.finished else None) or (1 if step.finished else None)
                done = total if step.finished else step.done
                bar.update(task, description=step.description, completed=done, total=total)
                if step.finished:
                    del pending[key]
                    if step.failure:
                        failures.append(step.failure)
            if pending:
                if deadline is not None and time.monotonic() > deadline:
                    raise Failure(late())
                time.sleep(interval)
    return failures
