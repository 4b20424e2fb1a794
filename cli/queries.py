"""Questions and what people say about the answers: ask, status, result, feedback."""

from __future__ import annotations

import json
from pathlib import Path

import click

from agent.choices import FEEDBACK_FORMATS, TASKS
from cli.base import Failure, FriendlyGroup, Step, follow
from cli.bases import follow_ingestion
from service import feedback as feedback_service
from service import queries


@click.command()
@click.argument("kb_name", metavar="KB")
@click.argument("question", required=False)
@click.option(
    "--file",
    "questions_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ask every non-empty line of this file instead (one batch: all are queued or none); prints one id each.",
)
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default="memorag",
    show_default=True,
    help="qa: memory alone; memorag: memory clues -> retrieval -> answer; summarize: key points -> summary.",
)
@click.option("--wait", is_flag=True, help="Wait for the answer and print it with its citation and evidence.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --wait: the whole answer record).")
@click.option("--show-clues", is_flag=True, help="With --wait: also print the clues the memories wrote.")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds --wait waits.")
def ask(
    kb_name: str,
    question: str | None,
    questions_file: Path | None,
    task: str,
    wait: bool,
    as_json: bool,
    show_clues: bool,
    timeout: float,
) -> None:
    """Ask QUESTION about the knowledge base KB; prints the query id at once."""
    if (question is None) == (questions_file is None):
        raise click.UsageError("give a QUESTION or --file FILE (one question per line), not both")
    if questions_file is not None:
        ask_file(kb_name, questions_file, task, wait=wait, as_json=as_json, timeout=timeout)
        return
    ticket = queries.ask(kb_name, question, task)
    if not wait:
        click.echo(json.dumps({"query": ticket.public_id, "status": "queued"}) if as_json else ticket.public_id)
        return
    if not as_json:
        click.echo(ticket.public_id)

    def poll(query_id: int) -> Step:
        state = queries.query_status(query_id)
        finished = state in ("done", "failed", "deleted")
        return Step(f"{ticket.public_id}: {state}", finished=finished)

    late = (
        f"{ticket.public_id} is still running after {timeout:.0f} s; see 'python manage.py result {ticket.public_id}'"
    )
    follow([ticket.id], poll, interval=0.2, timeout=timeout, late=lambda: late)
    print_result(ticket.id, as_json, show_clues=show_clues)


def ask_file(kb_name: str, path: Path, task: str, *, wait: bool, as_json: bool, timeout: float) -> None:
    """Every line of ``path`` as one batch; with ``wait``, each answer as it is done."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    tickets = queries.ask_many(kb_name, [(line, task) for line in lines if line])
    if not wait:
        for ticket in tickets:
            click.echo(json.dumps({"query": ticket.public_id, "status": "queued"}) if as_json else ticket.public_id)
        return
    by_id = {t.id: t.public_id for t in tickets}

    def poll(query_id: int) -> Step:
        state = queries.query_status(query_id)
        return Step(f"{by_id[query_id]}: {state}", finished=state in ("done", "failed", "deleted"))

    late = f"some questions are still running after {timeout:.0f} s; see 'python manage.py queries {kb_name}'"
    follow(list(by_id), poll, interval=0.2, timeout=timeout, late=lambda: late)
    for ticket in tickets:
        found = queries.result(ticket.id)
        if as_json:
            click.echo(json.dumps(found.record(), default=str))
        else:
            text = (found.answer or {}).get("text") or f"({found.status}{': ' + found.error if found.error else ''})"
            click.echo(f"{ticket.public_id}  {found.question}\n    {text}")


@click.command("queries")
@click.argument("kb_name", metavar="KB")
@click.option("--status", "state", default=None, help="Only queries in this status (queued, done, failed, ...).")
@click.option("--limit", type=click.IntRange(1, queries.HISTORY_PAGE_MAX), default=20, show_default=True)
@click.option("--before", "cursor", default=None, help="Start after this query id (the last page's next cursor).")
@click.option("--json", "as_json", is_flag=True, help="The page as JSON: queries and next_cursor.")
def history(kb_name: str, state: str | None, limit: int, cursor: str | None, as_json: bool) -> None:
    """The knowledge base KB's questions, newest first, with their answers and the feedback they got."""
    page = queries.history(kb_name, status=state, limit=limit, cursor=cursor)
    if as_json:
        click.echo(json.dumps({"queries": page.queries, "next_cursor": page.next_cursor}, indent=2))
        return
    if not page.queries:
        click.echo(f"no questions in {kb_name}" + (f" with status {state!r}" if state else ""))
    for item in page.queries:
        rated = "".join("+" if f["good"] else "-" for f in item["feedback"])
        click.echo(f"{item['id']:>6}  {item['status']:<10} {item['asked_at'][:19]}  {item['question']}")
        if item["answer"] is not None:
            click.echo(f"{'':8}{item['answer'][:200]}" + (f"  [feedback {rated}]" if rated else ""))
        elif item["error"]:
            click.echo(f"{'':8}{item['error']}")
    if page.next_cursor:
        click.echo(f"more: python manage.py queries {kb_name} --before {page.next_cursor}")


def print_result(query_id: int, as_json: bool, *, show_clues: bool = False) -> None:
    found = queries.result(query_id)
    row = found.answer
    if as_json:
        click.echo(json.dumps(found.record(), indent=2, default=str))
    elif row is None:
        raise Failure(f"{found.public_id} is {found.status}" + (f": {found.error}" if found.error else ""))
    else:
        click.echo(row["text"] or "(empty answer)")
        cited = row["citation"]
        if cited and row["supported"]:
            if cited.get("span"):
                click.echo(f"  answer: {cited['span']['text']}")
            for one in cited.get("citations") or [cited]:
                quote = " ".join(one["quote"].split())
                where = f"{one['chunk_id']} {one.get('document', '')}, chars {one['char_start']}-{one['char_end']}"
                context = f"; {one['context']}" if one.get("context") else ""
                click.echo(f'  source: "{quote}" ({where}{context})')
        elif row["supported"] is False and row["reason"]:
            click.echo(f"  not shown as an answer: {row['reason']}")
        for e in row["evidence"]:
            snippet = " ".join(e["text"].split())[:200]
            where = f"{e['doc_id']} {e['document']} #{e['ordinal']} (chars {e['char_start']}-{e['char_end']})"
            where += f" [{e['context']}]" if e.get("context") else ""  # rows stored before chunks had context
            click.echo(f"  evidence {where}: {snippet}")
        for clue in row["clues"] if show_clues else []:
            click.echo(f"  clue: {clue}")
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in row["timings"].items())
        adapter = f"; adapter {row['adapter_version']}" if row["adapter_version"] else ""
        model = f"model {row['model']} {row['model_fingerprint']}"
        click.echo(f"  ({found.task}, {row['reader'] or 'generate'}; {stages}; {model}{adapter})")
    if found.status == "failed":
        raise Failure(f"{found.public_id} failed: {found.error}")


@click.command()
@click.argument("ident", metavar="[ID]", required=False)
def status(ident: str | None) -> None:
    """Status of a document (d<number>) or a query (q<number>); without ID, the service's: workers, and work
    that is stale or being repaired."""
    if ident is None:
        print_overview()
        return
    now = queries.status(ident)
    line = f"{now.public_id}\t{now.status}"
    if now.progress:
        line += f"\t{now.progress['stage']} {now.progress['done']}/{now.progress['total']} tokens"
    if now.error:
        line += f"\t{now.error}"
    click.echo(line)


def print_overview() -> None:
    from cli.repair import describe
    from service import repair
    from service.stores import live_workers, memory_tiers, unshared_tiers

    workers = live_workers()
    for worker in workers:
        tier = f" (disk tier {worker['memory_tier']})" if worker.get("memory_tier") else ""
        click.echo(f"worker {worker['name']} on {worker['host']}: {', '.join(worker['queues'])}{tier}")
    if not workers:
        click.echo("no live worker: start one with 'python manage.py up'")
    if tiers := unshared_tiers(workers):
        apart = "; ".join(f"{', '.join(names)} on {tier}" for tier, names in tiers.items())
        click.echo(f"warning: the workers keep memories on {len(tiers)} disk tiers that are not shared ({apart}): "
                   "a memory Redis evicts is formed again from text on a host that lacks it; "
                   "give them one shared MEMORAG_MEMORY_DIR")  # fmt: skip
    for line in describe_tiers(memory_tiers()):
        click.echo(line)
    lines = describe(repair.findings())
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("nothing stale or being repaired")


def describe_tiers(tiers: dict) -> list[str]:
    """Where memories are and how full Redis is; a warning when its policy could evict queued work."""
    budget = f"of {_size(tiers['redis_maxmemory'])}" if tiers["redis_maxmemory"] else "(no maxmemory)"
    line = f"memories: Redis {_size(tiers['redis_used_bytes'])} {budget}, {tiers['policy']}"
    line += f", {tiers['evicted_keys']} keys evicted" if tiers["evicted_keys"] else ""
    if tiers["disk_dir"]:
        line += f"; disk tier {tiers['disk_dir']} {_size(tiers['disk_bytes'])}"
    else:
        line += "; no disk tier (MEMORAG_MEMORY_DIR=off)"
    lines = [line]
    if tiers["policy"].startswith("allkeys"):
        lines.append(f"warning: Redis's maxmemory-policy {tiers['policy']} may evict queued work; use volatile-lru")
    elif tiers["redis_maxmemory"] and tiers["policy"] == "noeviction":
        lines.append("warning: a full Redis refuses new memories (noeviction); volatile-lru evicts their hot copies")
    return lines


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@click.command()
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The whole answer record as JSON.")
@click.option("--show-clues", is_flag=True, help="Also print the clues the memories wrote.")
def result(ident: str, as_json: bool, show_clues: bool) -> None:
    """The answer to query ID with its citation, evidence and timings."""
    print_result(queries.existing_query(ident), as_json, show_clues=show_clues)


class FeedbackGroup(FriendlyGroup):
    """``feedback ID --good`` stays short: an id where a subcommand would be means ``feedback give``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["give", *args]
        return super().parse_args(ctx, args)


@click.group(cls=FeedbackGroup)
def feedback() -> None:
    """Rate answers (feedback ID --good|--bad [--answer TEXT]) or import labelled data; both retrain clues.

    \b
    python manage.py feedback q12 --bad --answer "They postponed it"
    python manage.py feedback import ../shared/data/qmsum/train.jsonl --format qmsum --kb meetings
    """


@feedback.command("give")
@click.argument("ident", metavar="ID")
@click.option("--good/--bad", "good", default=None, help="Was the answer right?")
@click.option("--answer", "corrected", default=None, help="The correct answer, when it was wrong.")
@click.option("--comment", default=None, help="Anything else worth keeping.")
def feedback_give(ident: str, good: bool | None, corrected: str | None, comment: str | None) -> None:
    """Rate the answer to query ID; ratings and corrections retrain the clue writer."""
    row = feedback_service.give_feedback(ident, good, corrected, comment)
    click.echo(f"feedback {row} stored for {ident}")


@feedback.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FEEDBACK_FORMATS), required=True)
@click.option("--kb", "kb_name", required=True, help="Knowledge base to hold the documents (created if missing).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N documents.")
@click.option("--wait", is_flag=True, help="Show ingestion progress until every document is ready.")
def feedback_import(path: Path, fmt: str, kb_name: str, limit: int | None, wait: bool) -> None:
    """Seed KB's feedback from a labelled dataset: its documents are ingested, each question becomes a
    query with its gold answer (and gold evidence spans, where the format has them) as a correction.
    Importing the same file again adds nothing twice."""
    done = feedback_service.import_feedback(path, fmt, kb_name, limit)
    click.echo(
        f"{done.added} feedback rows imported into {kb_name} ({done.skipped} already there), "
        f"{done.documents} documents ({len(done.ingesting)} being ingested)"
    )
    if wait and done.ingesting:
        follow_ingestion(done.ingesting)
