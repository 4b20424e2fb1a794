"""Running the service: the embedded Valkey, workers, beat, and the bundled model."""

from __future__ import annotations

import os
import time

import click

from cli.base import Failure, FriendlyGroup, console, progress
from core.redact import redact
from core.settings import get_settings


@click.command()
@click.option("--no-worker", is_flag=True, help="Start only the embedded Valkey, no background worker.")
@click.option("--no-api", is_flag=True, help="Do not start the HTTP API and web page.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the worker is serving queues.")
def up(no_worker: bool, no_api: bool, wait: bool) -> None:
    """Start the embedded Valkey, a background worker and the HTTP API (a no-op for what already runs).

    Valkey keeps its data under MEMORAG_HOME/valkey; the worker logs to
    MEMORAG_HOME/logs/worker.log, the API (MEMORAG_API_HOST:MEMORAG_API_PORT, default
    127.0.0.1:8000) to api.log. With MEMORAG_REDIS_URL set, Valkey is not started.
    """
    from service import processes

    settings = get_settings()
    if settings.redis_url:
        click.echo(f"using Redis at {redact(settings.redis_url)} (MEMORAG_REDIS_URL)")
    else:
        url, running = processes.start_store(settings)
        click.echo(f"embedded Valkey {'already running' if running else 'started'} at {url}")
    if no_worker:
        return
    pid, started = processes.start(settings)
    if not started:
        click.echo(f"worker already running (pid {pid})")
    else:
        if wait:
            with console.status("starting the worker"):
                _wait_for_worker(settings, pid)
        click.echo(f"worker started (pid {pid}, log {processes.log_file(settings)})")
    if not no_api:
        _start_api(settings, wait)


def _start_api(settings, wait: bool, timeout: float = 30.0) -> None:
    import urllib.request

    from service import processes

    url = f"http://{settings.api_host}:{settings.api_port}"
    pid, started = processes.start(settings, "api")
    if not started:
        click.echo(f"API already running at {url} (pid {pid})")
        return
    deadline = time.monotonic() + (timeout if wait else 0)
    while time.monotonic() < deadline:
        if processes.running_pid(settings, "api") is None:
            raise Failure(f"the API exited at start; see {processes.log_file(settings, 'api')}")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).close()
            break
        except OSError:
            time.sleep(0.25)
    click.echo(f"API started at {url} (pid {pid}, log {processes.log_file(settings, 'api')})")


def _wait_for_worker(settings, pid: int, timeout: float = 120.0) -> None:
    from service import processes
    from service.stores import live_queues

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes.running_pid(settings) is None:
            raise Failure(f"the worker exited at start; see {processes.log_file(settings)}")
        if set(processes.queues()) <= set(live_queues()):
            return
        time.sleep(0.25)
    raise Failure(f"the worker did not come up in {timeout:.0f} s; see {processes.log_file(settings)}")


@click.command()
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds the worker may take to finish its current task before it is ended (the task is sent again).",
)
def down(wait_s: float) -> None:
    """Stop the API, the background worker with its beat, and the embedded Valkey.

    The worker finishes its current task within --wait seconds; otherwise it is
    ended and the task goes back to the queue (the reconciler sends it again).
    """
    from service import processes

    settings = get_settings()
    if processes.stop(settings, "api", grace_s=5):
        click.echo("API stopped")
    how = processes.stop(settings, grace_s=wait_s)
    if how is None:
        click.echo("no background worker was running")
    elif how == "stopped":
        click.echo("worker stopped (its current task, if any, finished)")
    else:
        click.echo(f"worker ended after {wait_s:g} s with a task unfinished; it is sent again when a worker runs")
    click.echo("embedded Valkey stopped" if processes.stop_store(settings) else "embedded Valkey was not running")


@click.command()
@click.option("-Q", "--queues", default="memory,query,train", show_default=True, help="Queues to serve.")
@click.option(
    "--pool",
    type=click.Choice(["solo", "prefork"]),
    default="solo",
    show_default=True,
    help="solo: one process holds the model; prefork: one child per --concurrency.",
)
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("-n", "--hostname", default=None, help="Worker name (default memorag-PID@host).")
@click.option(
    "--beat", is_flag=True, help="Also run the schedule (reconcile, retrain) in this worker: for one-worker set-ups."
)
def worker(queues: str, pool: str, concurrency: int, loglevel: str, hostname: str | None, beat: bool) -> None:
    """Run a Celery worker in the foreground (Ctrl-C stops it after the current task).

    Every worker also serves the control queue (the reconciler's passes).
    """
    from service import processes

    name = hostname or f"memorag-{os.getpid()}@%h"
    processes.run_worker(
        get_settings(), queues=queues, pool=pool, concurrency=concurrency, loglevel=loglevel, hostname=name, beat=beat
    )


@click.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run Celery beat: the periodic reconcile and retraining (schedule state under MEMORAG_HOME/run).

    Run one beat per deployment (or one worker with --beat, as 'up' does).
    """
    from service import processes

    processes.run_beat(get_settings(), loglevel)


@click.group(cls=FriendlyGroup)
def models() -> None:
    """Prepare and inspect the language models."""


@models.command("prepare")
def models_prepare() -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF to safetensors once (a re-run is a no-op)."""
    from agent.models import default_model_dir, fingerprint_dir, is_prepared, prepare_default_model

    settings = get_settings()
    if is_prepared(default_model_dir(settings)):
        click.echo(f"default model ready in {default_model_dir(settings)} (nothing to do)")
        return
    stages = ["reading GGUF weights", "building safetensors model", "writing safetensors", "done"]
    with progress() as bar:
        task = bar.add_task("preparing the default model", total=len(stages) - 1)

        def on_stage(stage: str) -> None:
            bar.update(task, description=stage, completed=stages.index(stage))

        path, _ = prepare_default_model(settings, on_stage=on_stage)
    click.echo(f"default model ready in {path} (fingerprint {fingerprint_dir(path)})")


@click.command()
@click.option("--host", default=None, help="Address to bind [MEMORAG_API_HOST, default 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port [MEMORAG_API_PORT, default 8000].")
@click.option(
    "--workers", type=click.IntRange(0, 32), default=None,
    help="Processes answering requests [MEMORAG_API_WORKERS, default 0: one per CPU core, at most 4].",
)  # fmt: skip
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the HTTP API in the foreground (OpenAPI docs at /docs).

    A non-loopback address needs at least one API key ('manage.py keys create'),
    so an open service is never reachable from another machine by accident.
    """
    import ipaddress

    import uvicorn

    from api.app import create_app
    from service.keys import active_keys

    settings = get_settings()
    host, port = host or settings.api_host, port or settings.api_port
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and active_keys() == 0:
        raise Failure(f"refusing to listen on {host} without an API key: create one with 'manage.py keys create'")
    workers = settings.api_workers if workers is None else workers
    workers = workers or min(os.cpu_count() or 1, 4)
    click.echo(f"memorag API on http://{host}:{port} (docs at /docs), {workers} process{'es' * (workers > 1)}")
    if workers == 1:
        uvicorn.run(create_app(), host=host, port=port, log_level="info")
    else:  # each process builds its own app; the supervisor restarts one that dies
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")
