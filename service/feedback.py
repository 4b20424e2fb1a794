"""Feedback: a person's rating and correction, or a labelled dataset imported as feedback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlmodel import select

from service.bases import ensure_kb
from service.documents import Added, add_documents, content_hash
from service.errors import Invalid
from service.queries import existing_query
from store import db


def give_feedback(ident: str, good: bool | None, corrected: str | None = None, comment: str | None = None) -> int:
    """Store a rating of query ``ident``'s answer; returns the feedback row's id."""
    if good is None:
        raise Invalid("say --good or --bad")
    number = existing_query(ident)
    with db.session() as s:
        row = db.Feedback(query_id=number, rating=1 if good else -1, corrected_answer=corrected, comment=comment)
        s.add(row)
        s.flush()
        return row.id


@dataclass(frozen=True)
class Imported:
    added: int
    skipped: int  # already imported from this dataset
    documents: int
    ingesting: list[Added]


def import_feedback(path: Path, fmt: str, kb_name: str, limit: int | None = None) -> Imported:
    """Seed a knowledge base's feedback from a labelled dataset.

    Its documents are ingested (the knowledge base is created if missing);
    each question becomes a query with its gold answer (and gold evidence
    spans, where the format has them) as a correction. Importing the same
    file again adds nothing twice.
    """
    from agent.evaluation import load_samples

    samples = load_samples(fmt, path, limit)
    kb_id = ensure_kb(kb_name, description=f"imported from {path.name}")
    docs = add_documents(kb_name, [(f"{x.doc_id}.txt", x.text) for x in samples])
    added = skipped = 0
    for sample in samples:
        with db.session() as s:
            digest = content_hash(sample.text)
            doc = s.exec(
                select(db.Document).where(db.Document.kb_id == kb_id, db.Document.content_hash == digest)
            ).one()
            for q in sample.questions:
                known = s.exec(
                    select(db.Feedback.id)
                    .join(db.Query, db.Feedback.query_id == db.Query.id)
                    .where(db.Query.kb_id == kb_id, db.Query.text == q.text, db.Feedback.source == fmt)
                ).first()
                if known is not None:
                    skipped += 1
                    continue
                query = db.Query(kb_id=kb_id, text=q.text, status=db.Status.done)
                s.add(query)
                s.flush()
                spans = [{"document": doc.id, "start": a, "end": b} for a, b in q.evidence]
                feedback = db.Feedback(
                    query_id=query.id, rating=-1, corrected_answer=q.answers[0], source=fmt, evidence=spans
                )
                s.add(feedback)
                added += 1
    return Imported(added, skipped, len(samples), [d for d in docs if d.pending])
