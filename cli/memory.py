"""Single-document memories, no knowledge base or worker needed: build, show, list, ask, delete."""

from __future__ import annotations

import time
from pathlib import Path

import click

from agent.choices import SCORERS, TASKS
from cli.base import Failure, FriendlyGroup, console, progress
from core.settings import get_settings
from service.stores import Stores

CLI_KB = "_cli"  # where these memories live: a knowledge base no other command lists


@click.group(cls=FriendlyGroup)
def memory() -> None:
    """Build, inspect and query single-document memories (no knowledge base needed)."""


@memory.command("build")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--beta", type=click.IntRange(1, 64), default=None, help="Compression ratio (1 = keep everything).")
@click.option("--key", default=None, help="Name to store the memory under (default: the file name).")
@click.option(
    "--scorer",
    type=click.Choice(SCORERS),
    default=None,
    help="Which KV pairs stay (default: MEMORAG_SCORER): surprisal keeps facts stated once; snapkv forms "
    "about a quarter faster; reconstruct holds the most at beta 4 for 2.5x the time.",
)
def memory_build(file: Path, beta: int | None, key: str | None, scorer: str | None) -> None:
    """Read FILE once: index its chunks and store its compressed global memory in Redis."""
    from agent.documents import read_document
    from agent.models import load_model
    from agent.pipeline import memorize_document
    from agent.retrieval import get_embedder

    settings = get_settings()
    if scorer:
        settings = settings.replace(scorer=scorer)
    text = read_document(file, settings.max_document_mb, settings.max_pdf_pages)
    stores = Stores()
    lm = load_model(settings=settings)
    name = key or file.name
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"reading {file.name}", total=None)
        mem, n_chunks = memorize_document(
            lm,
            get_embedder(settings.embedder),
            stores.memories,
            stores.index,
            CLI_KB,
            name,
            text,
            settings=settings,
            beta=beta,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    meta = mem.meta
    click.echo(
        f"memory {name!r}: {meta.doc_tokens} tokens -> {meta.memory_tokens} memory tokens (beta {meta.beta}), "
        f"{mem.nbytes / 2**20:.1f} MiB, {n_chunks} chunks indexed, {time.perf_counter() - started:.1f} s"
    )


@memory.command("show")
@click.argument("name")
def memory_show(name: str) -> None:
    """Sizes, compression ratio and model of the stored memory NAME."""
    manifest = Stores().memories.manifest(CLI_KB, name)
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
    for name in Stores().memories.list(CLI_KB):
        click.echo(name)


@memory.command("ask")
@click.argument("name")
@click.argument("question")
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default="qa",
    show_default=True,
    help="qa: from memory alone; memorag: memory clues -> retrieval -> answer; summarize: key points -> summary.",
)
@click.option("--show-clues", is_flag=True, help="Also print the clues the memory wrote.")
def memory_ask(name: str, question: str, task: str, show_clues: bool) -> None:
    """Answer QUESTION about the document stored as NAME, printing the evidence used."""
    from agent.models import load_model
    from agent.pipeline import answer
    from agent.retrieval import get_embedder

    if not question.strip():
        raise Failure("the question is empty")
    settings = get_settings()
    stores = Stores()
    if not stores.memories.exists(CLI_KB, name):
        raise Failure(f"no memory named {name!r} (see 'manage.py memory list')")
    lm, embedder = load_model(settings=settings), get_embedder(settings.embedder)
    with console.status("reading the memory and thinking"):
        result = answer(
            lm, embedder, stores.memories, stores.index, CLI_KB, [name], question, task=task, settings=settings
        )
    click.echo(result.text)
    reading = result.reading
    if reading and reading.supported and reading.citation:
        if reading.citation.span:
            click.echo(f"  answer: {reading.citation.span.text}")
        for cited in reading.citations or (reading.citation,):
            quote = " ".join(cited.quote.split())
            click.echo(f'  source: "{quote}" ({cited.chunk_id}, chars {cited.char_start}-{cited.char_end})')
    elif reading and reading.reason:
        click.echo(f"  not shown as an answer: {reading.reason}")
    for clue in result.clues if show_clues else []:
        click.echo(f"  clue: {clue}")
    for e in result.evidence:
        snippet = " ".join(e.chunk.text.split())[:160]
        where = f"{e.chunk.doc_id} #{e.chunk.ordinal}, chars {e.chunk.char_start}-{e.chunk.char_end}"
        click.echo(f"  evidence [{where}]: {snippet}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    click.echo(f"  ({task}; {stages})")


@memory.command("delete")
@click.argument("name")
def memory_delete(name: str) -> None:
    """Remove the stored memory NAME and its indexed chunks."""
    stores = Stores()
    if not stores.memories.delete(CLI_KB, name):
        raise Failure(f"no memory named {name!r}")
    stores.index.delete_document(CLI_KB, name)
    click.echo(f"deleted {name}")
