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


def _memory_store():
    from store.memories import MemoryStore
    from store.redis import connect

    settings = get_settings()
    return MemoryStore(connect(settings=settings), ttl_s=settings.memory_ttl_s)


@memory.command("build")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--beta", type=click.IntRange(1, 64), default=None, help="Compression ratio (1 = keep everything).")
@click.option("--key", default=None, help="Name to store the memory under (default: the file name).")
def memory_build(file: Path, beta: int | None, key: str | None) -> None:
    """Read FILE once and store its compressed global memory in Redis."""
    from agent.documents import read_document
    from agent.models import load_model
    from agent.pipeline import memorize, save_memory

    settings = get_settings()
    text = read_document(file, settings.max_document_mb)
    store = _memory_store()
    lm = load_model(settings=settings)
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"reading {file.name}", total=None)
        mem = memorize(lm, text, settings=settings, beta=beta,
                       on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    manifest = save_memory(store, CLI_KB, key or file.name, mem)
    meta = mem.meta
    click.echo(
        f"memory {key or file.name!r}: {meta.doc_tokens} tokens -> {meta.memory_tokens} memory tokens "
        f"(beta {meta.beta}), {manifest.size / 2**20:.1f} MiB, {time.perf_counter() - started:.1f} s"
    )


@memory.command("show")
@click.argument("name")
def memory_show(name: str) -> None:
    """Sizes, compression ratio and model of the stored memory NAME."""
    store = _memory_store()
    manifest = store.manifest(CLI_KB, name)
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
    for name in _memory_store().list(CLI_KB):
        click.echo(name)


@memory.command("ask")
@click.argument("name")
@click.argument("question")
@click.option("--max-tokens", default=96, show_default=True, help="Most new tokens to generate.")
def memory_ask(name: str, question: str, max_tokens: int) -> None:
    """Answer QUESTION from the memory NAME alone (no retrieval)."""
    from agent.models import load_model
    from agent.pipeline import answer_from_memory, rehydrate

    if not question.strip():
        raise Failure("the question is empty")
    store = _memory_store()
    if not store.exists(CLI_KB, name):
        raise Failure(f"no memory named {name!r} (see 'manage.py memory list')")
    lm = load_model()
    mem = rehydrate(store, CLI_KB, name, lm)
    with console.status("thinking"):
        answer = answer_from_memory(lm, mem, question, max_new_tokens=max_tokens)
    click.echo(answer)


@memory.command("delete")
@click.argument("name")
def memory_delete(name: str) -> None:
    """Remove the stored memory NAME."""
    if not _memory_store().delete(CLI_KB, name):
        raise Failure(f"no memory named {name!r}")
    click.echo(f"deleted {name}")


def main() -> None:
    cli(prog_name="manage.py")


if __name__ == "__main__":
    sys.exit(main())
