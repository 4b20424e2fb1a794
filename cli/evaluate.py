"""``eval``: every mode of the pipeline on a dataset, side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from agent.choices import DATASET_FORMATS, EVIDENCE_ORDERS, FUSIONS
from cli.base import progress
from core.settings import get_settings

COLUMNS = (
    "n",
    "f1",
    "em",
    "rougeL",
    "recall@{k}",
    "hit@{k}",
    "answer_in_evidence",
    "answer_recall",
    "supported",
    "citation_hit",
    "top_answer_found",
    "unsupported_shown",
    "right",
    "citation_recall",
    "citation_precision",
    "answerable_declined",
    "offtopic_declined",
    "wrong_shown",
    "routed",
    "latency_s",
)


@click.command("eval")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(DATASET_FORMATS),
    required=True,
    help="qmsum/leval: jsonl; longbench: a predictions json; needle: a folder of essays; kbqa: a knowledge-base "
    "set (documents by path, questions naming their document or none: ops/bench/data/techdocs.json).",
)
@click.option(
    "--modes",
    default="rag,memorag,qa,full",
    show_default=True,
    help="Comma-separated: rag (question-only retrieval), memorag (memory clues + retrieval), "
    "qa (memory alone), full (whole document, cut in the middle to fit).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N documents.")
@click.option("--questions", type=click.IntRange(1), default=None, help="At most N questions per document.")
@click.option("--beta", type=click.IntRange(1, 64), default=None, help="Memory compression [MEMORAG_BETA].")
@click.option("--k", type=click.IntRange(1, 50), default=None, help="Chunks retrieved [MEMORAG_TOP_K].")
@click.option(
    "--answer-tokens",
    type=click.IntRange(1, 1024),
    default=None,
    help="Longest answer (default: 128 for qmsum, 32 for needle, 64 otherwise).",
)
@click.option(
    "--fusion",
    type=click.Choice(FUSIONS),
    default=None,
    help="How memorag fuses the question and its clues (default: the pipeline's).",
)
@click.option(
    "--evidence-order",
    type=click.Choice(EVIDENCE_ORDERS),
    default="document",
    show_default=True,
    help="How rag and memorag lay the passages out for the generator: in document order, or by "
    "retrieval score with the best nearest the question (best-last) or first.",
)
@click.option(
    "--readers",
    default="none",
    show_default=True,
    help="Comma-separated: how rag and memorag answer from their evidence. none: the generator's "
    "answer, unchecked; auto, extract, generate: the grounded reader (rows 'rag/auto').",
)
@click.option(
    "--unanswerable", is_flag=True, help="Ask each document's questions of the next document, where the answer is not."
)
@click.option(
    "--kb",
    "kb_mode",
    is_flag=True,
    help="All documents in one knowledge base, every question asked of the whole of it through the path "
    "'ask' takes (routing, memories, retrieval, reader); reports routing beside the rest. kbqa sets need it.",
)
@click.option(
    "--retrieval",
    type=click.Choice(["hybrid", "dense"]),
    default=None,
    help="hybrid: BM25 over each chunk and its title/headings beside the embedding; dense: the embedding "
    "alone (default: MEMORAG_RETRIEVAL).",
)
@click.option("--no-context", is_flag=True, help="Chunks without their title and heading path (the bare passage).")
@click.option(
    "--split",
    type=click.Choice(["dev", "test"]),
    default=None,
    help="Only the questions of this split (kbqa sets: choose thresholds on dev, report test).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the table, settings and every answer here.",
)
def eval_(
    path: Path,
    fmt: str,
    modes: str,
    limit: int | None,
    questions: int | None,
    beta: int | None,
    k: int | None,
    answer_tokens: int | None,
    fusion: str | None,
    evidence_order: str,
    readers: str,
    unanswerable: bool,
    kb_mode: bool,
    retrieval: str | None,
    no_context: bool,
    split: str | None,
    json_out: Path | None,
) -> None:
    """Answer a dataset's questions in every mode and compare F1, EM, ROUGE-L, evidence recall and latency.

    All modes share the documents, chunker, embedder, generator and k. Memories
    are cached in the memory store, so another mode or run reuses them.

    \b
    python manage.py eval ../shared/data/qmsum/val.jsonl --format qmsum --limit 10 --json qmsum.json
    """
    from agent.evaluation import ANSWER_TOKENS, SHORT_ANSWERS, EvalConfig, Harness, load_samples
    from agent.models import load_model
    from agent.retrieval import DEFAULT_FUSION, get_embedder
    from service.stores import Stores

    settings = get_settings()
    config = EvalConfig(
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
        k=k or settings.top_k,
        beta=beta or settings.beta,
        questions=questions,
        answer_tokens=answer_tokens or ANSWER_TOKENS[fmt],
        short_answers=SHORT_ANSWERS[fmt],
        fusion=fusion or DEFAULT_FUSION,
        evidence_order=evidence_order,
        readers=tuple(r.strip() for r in readers.split(",") if r.strip()),
        unanswerable=unanswerable,
        retrieval=retrieval or settings.retrieval,
        context=not no_context,
    )
    if fmt == "kbqa" and not kb_mode:
        raise click.UsageError("a kbqa set is asked as one knowledge base: add --kb")
    if kb_mode and unanswerable:
        raise click.UsageError("--unanswerable asks of one document at a time; --kb asks the whole knowledge base")
    try:
        samples = load_samples(fmt, path, limit)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    stores = Stores()
    lm, embedder = load_model(settings=settings), get_embedder(settings.embedder)
    harness = Harness(lm, embedder, stores.index, stores.memories, config, settings)
    with progress() as bar:
        task = bar.add_task("loading", total=None)

        def show(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        if kb_mode:
            report = harness.evaluate_kb(path.stem, samples, show, split=split)
        else:
            report = harness.evaluate(path.stem, samples, show)
    print_report(report)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_json(), indent=2))
        click.echo(f"wrote {json_out}")


def print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    k = report.config.k
    n = report.to_json()["n"]
    table = Table(title=f"{report.dataset}: {n} questions, {report.model}, beta {report.config.beta}, k {k}")
    columns = [c.format(k=k) for c in COLUMNS]
    table.add_column("mode")
    for column in columns:
        table.add_column(column, justify="right")
    for mode, row in report.modes().items():
        cells = [row[c] for c in columns]
        table.add_row(mode, *("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    memory = report.memory
    click.echo(f"memories: {memory['built']} built in {memory['build_s']:.1f} s, {memory['cached']} from cache")
