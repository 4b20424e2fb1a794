#!/usr/bin/env python
"""memorag manager: the one entry point for people and scripts.

Every user-facing failure is one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from agent.settings import get_settings

console = Console(stderr=True)
CLI_KB = "_cli"
USAGE_ERROR = 2


class Failure(click.ClickException):
    exit_code = USAGE_ERROR

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    from agent.documents import BadDocument
    from agent.memory.errors import MemoryProblem
    from agent.models import ModelUnavailable
    from store.memories import MemoryNotFound
    from store.redis import StoreUnavailable

    return (BadDocument, MemoryProblem, ModelUnavailable, MemoryNotFound, StoreUnavailable, ValueError)


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


def progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@click.group(cls=FriendlyGroup)
def cli() -> None:
    """memorag: answer questions over long documents with a compressed global memory.

    Configuration comes from MEMORAG_* environment variables; nothing is
    needed for the embedded defaults (data under ~/.local/share/memorag).
    """


# services -------------------------------------------------------------------
@cli.command()
def up() -> None:
    """Start the embedded Valkey (data under MEMORAG_HOME/valkey); a no-op when it runs or Redis is configured."""
    from store.redis import embedded_url, start_embedded

    settings = get_settings()
    if settings.redis_url:
        click.echo(f"using Redis at {settings.redis_url} (MEMORAG_REDIS_URL); nothing to start")
        return
    running = embedded_url(settings)
    url = running or start_embedded(settings)
    click.echo(f"embedded Valkey {'already running' if running else 'started'} at {url}")


@cli.command()
def down() -> None:
    """Stop the embedded Valkey, saving its data."""
    from store.redis import stop_embedded

    click.echo("embedded Valkey stopped" if stop_embedded(get_settings()) else "embedded Valkey was not running")


# models ---------------------------------------------------------------------
@cli.group(cls=FriendlyGroup)
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


# memory ---------------------------------------------------------------------
@cli.group(cls=FriendlyGroup)
def memory() -> None:
    """Build, inspect and query single-document memories (no knowledge base needed)."""


class _Stores:
    """Redis memory store and vector index, opened once per command."""

    def __init__(self) -> None:
        from store.memories import MemoryStore
        from store.redis import connect
        from store.vectors import open_index

        settings = get_settings()
        client = connect(settings=settings)
        self.memories = MemoryStore(client, ttl_s=settings.memory_ttl_s)
        self.index = open_index(client, settings)


@memory.command("build")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--beta", type=click.IntRange(1, 64), default=None, help="Compression ratio (1 = keep everything).")
@click.option("--key", default=None, help="Name to store the memory under (default: the file name).")
def memory_build(file: Path, beta: int | None, key: str | None) -> None:
    """Read FILE once: index its chunks and store its compressed global memory in Redis."""
    from agent.documents import read_document
    from agent.models import load_model
    from agent.pipeline import memorize_document
    from agent.retrieval import get_embedder

    settings = get_settings()
    text = read_document(file, settings.max_document_mb)
    stores = _Stores()
    lm = load_model(settings=settings)
    name = key or file.name
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"reading {file.name}", total=None)
        mem, n_chunks = memorize_document(
            lm, get_embedder(settings.embedder), stores.memories, stores.index, CLI_KB, name, text,
            settings=settings, beta=beta,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    meta = mem.meta
    click.echo(
        f"memory {name!r}: {meta.doc_tokens} tokens -> {meta.memory_tokens} memory tokens (beta {meta.beta}), "
        f"{mem.nbytes / 2**20:.1f} MiB, {n_chunks} chunks indexed, {time.perf_counter() - started:.1f} s"
    )


@memory.command("show")
@click.argument("name")
def memory_show(name: str) -> None:
    """Sizes, compression ratio and model of the stored memory NAME."""
    manifest = _Stores().memories.manifest(CLI_KB, name)
    if manifest is None:
        raise Failure(f"no memory named {name!r} (see 'manage.py memory list')")
    meta = manifest.meta
    rows = {
        "model": f"{meta['model_name']} ({meta['model_fingerprint']})",
        "document tokens": meta["doc_tokens"],
        "memory tokens": meta["memory_tokens"],
        "ratio": f"{meta['doc_tokens'] / max(1, meta['memory_tokens']):.1f}x (beta {meta['beta']})",
        "window / scorer": f"{meta['window']} / {meta['scorer']}",
        "bytes": f"{manifest.size} ({manifest.size / max(1, meta['doc_tokens']):.0f} per document token)",
        "chunks": manifest.chunks,
        "sha256": manifest.sha256[:16],
    }
    for label, value in rows.items():
        click.echo(f"{label:>16}: {value}")


@memory.command("list")
def memory_list() -> None:
    """Names of the stored single-document memories."""
    for name in _Stores().memories.list(CLI_KB):
        click.echo(name)


@memory.command("ask")
@click.argument("name")
@click.argument("question")
@click.option(
    "--task", type=click.Choice(["qa", "memorag", "summarize"]), default="qa", show_default=True,
    help="qa: from memory alone; memorag: memory clues -> retrieval -> answer; summarize: key points -> summary.",
)  # fmt: skip
def memory_ask(name: str, question: str, task: str) -> None:
    """Answer QUESTION about the document stored as NAME, printing the evidence used."""
    from agent.models import load_model
    from agent.pipeline import answer
    from agent.retrieval import get_embedder

    if not question.strip():
        raise Failure("the question is empty")
    settings = get_settings()
    stores = _Stores()
    if not stores.memories.exists(CLI_KB, name):
        raise Failure(f"no memory named {name!r} (see 'manage.py memory list')")
    lm = load_model(settings=settings)
    with console.status("reading the memory and thinking"):
        result = answer(lm, get_embedder(settings.embedder), stores.memories, stores.index, CLI_KB, [name],
                        question, task=task, settings=settings)  # fmt: skip
    click.echo(result.text)
    for clue in result.clues:
        click.echo(f"  clue: {clue}")
    for e in result.evidence:
        snippet = " ".join(e.chunk.text.split())[:160]
        click.echo(f"  evidence [{e.chunk.doc_id} #{e.chunk.ordinal}, chars {e.chunk.char_start}-{e.chunk.char_end}]: "
                   f"{snippet}")  # fmt: skip
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    click.echo(f"  ({task}; {stages})")


@memory.command("delete")
@click.argument("name")
def memory_delete(name: str) -> None:
    """Remove the stored memory NAME and its indexed chunks."""
    stores = _Stores()
    if not stores.memories.delete(CLI_KB, name):
        raise Failure(f"no memory named {name!r}")
    stores.index.delete_document(CLI_KB, name)
    click.echo(f"deleted {name}")


def main() -> None:
    cli(prog_name="manage.py")


if __name__ == "__main__":
    sys.exit(main())
