"""The retrain job: feedback rows -> preference pairs -> adapter -> gate -> version (maybe promoted).

Runs on the ``train`` queue (beat sends it every ``MEMORAG_RETRAIN_INTERVAL``
seconds; ``manage.py retrain`` sends it now). It trains only when at least
``MEMORAG_RETRAIN_MIN_FEEDBACK`` feedback rows arrived since the last finished
run, unless forced. Every run leaves a ``TrainingRun`` row with its counts,
losses, metrics and decision; a failed run is marked failed with the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import func, select

from agent import adapters, pipeline, rlgf
from agent.retrieval import ADAPTER_FUSION, DEFAULT_FUSION, chunk_document
from store import db
from store.adapters import AdapterRegistry
from store.db import Answer, Document, Feedback, KnowledgeBase, Query, Status, TrainingRun
from workers.jobs import Progress, doc_id_of, doc_key, document_text, sync_adapter
from workers.runtime import runtime

log = logging.getLogger(__name__)


def retrain(force: bool = False, on_progress: Progress | None = None) -> dict[str, Any]:
    rt = runtime()
    settings = rt.settings
    report = on_progress or (lambda *_: None)
    with db.session() as s:
        last = s.exec(
            select(TrainingRun).where(TrainingRun.status == Status.done).order_by(TrainingRun.id.desc())
        ).first()
        since = int((last.metrics or {}).get("last_feedback_id", 0)) if last else 0
        new = s.exec(select(func.count()).select_from(Feedback).where(Feedback.id > since)).one()
        if not force and new < settings.retrain_min_feedback:
            return {"status": "skipped", "new_feedback": new, "needed": settings.retrain_min_feedback}
        run = TrainingRun(status=Status.processing)
        s.add(run)
        s.flush()
        run_id = run.id
    try:
        outcome = _train_and_gate(rt, run_id, report)
    except Exception as exc:
        with db.session() as s:
            run = s.get(TrainingRun, run_id)
            run.status, run.reason, run.finished_at = Status.failed, f"{type(exc).__name__}: {exc}", db.utcnow()
            s.add(run)
        raise
    finally:
        adapters.mark(rt.lm, "trained")  # whatever training left in the slot is not the promoted version
        sync_adapter(rt)
    return outcome


def _train_and_gate(rt, run_id: int, report: Progress) -> dict[str, Any]:
    settings, lm = rt.settings, rt.lm
    examples, last_feedback = feedback_examples()
    heldout = [e for i, _, e in examples if _is_heldout(i, settings.rlgf_heldout)]
    train = [e for i, _, e in examples if not _is_heldout(i, settings.rlgf_heldout)]
    if not train or not heldout:
        raise ValueError(f"need feedback both to train on and to hold out; have {len(train)} and {len(heldout)}")
    corpus = _corpus(rt, {e.doc_id: kb for _, kb, e in examples}, report)
    current = sync_adapter(rt)
    fusions = {"current": adapters.loaded_fusion(lm) or DEFAULT_FUSION, "candidate": ADAPTER_FUSION}
    report("evaluating the current clue writer", 0, len(heldout))
    corpus.fusion = fusions["current"]  # as queries are answered now
    hints: dict = {}  # the base model's other clues, written once for both writers
    before = rlgf.evaluate(corpus, heldout, adapter=True, hints=hints)
    corpus.fusion = fusions["candidate"]
    budget_s = settings.rlgf_budget_s / 2  # half to sample and score candidates, half to train
    n = settings.rlgf_candidates
    pairs, stats = rlgf.preference_data(corpus, train, n=n, seed=run_id, budget_s=budget_s, on_progress=report)
    texts = {e.doc_id: document_text(e.doc_id) for e in train if e.evidence}
    sft = [(e, rlgf.evidence_text(texts[e.doc_id], e)) for e in train if e.evidence]
    steps, sft_steps = settings.rlgf_steps if pairs else 0, settings.rlgf_sft_steps if sft else 0
    config = rlgf.TrainConfig(steps=steps, sft_steps=sft_steps, seed=run_id, budget_s=budget_s)
    checkpoint = settings.home / "training" / f"run-{run_id}.safetensors"
    result = rlgf.train(corpus, pairs, config, sft=sft, checkpoint=checkpoint, on_progress=report)
    report("evaluating the new clue writer", 0, len(heldout))
    after = rlgf.evaluate(corpus, heldout, adapter=True, hints=hints)
    decision = rlgf.gate(after, before, k=corpus.k, margin=settings.gate_margin)
    version = _publish(rt, {"run": run_id, "pairs": len(pairs), "fusion": corpus.fusion}, after, decision.promote)
    metrics = {
        "current": before,
        "candidate": after,
        "current_version": current,
        "fusions": fusions,
        "last_feedback_id": last_feedback,
        "train_examples": len(train),
        "heldout_examples": len(heldout),
        "candidates": stats.candidates,
        "sft_examples": len(sft),
        "steps": result.steps,
        "train_s": round(result.seconds, 1),
    }
    verdict = "promoted" if decision.promote else "kept"
    with db.session() as s:
        run = s.get(TrainingRun, run_id)
        run.status, run.finished_at = Status.done, db.utcnow()
        run.feedback_rows, run.pairs, run.losses, run.metrics = len(examples), len(pairs), result.losses, metrics
        run.decision, run.reason, run.adapter_version = verdict, decision.reason, version
        s.add(run)
    checkpoint.unlink(missing_ok=True)
    return {"status": "done", "run": run_id, "decision": verdict, "reason": decision.reason, "version": version}


def _publish(rt, info: dict, metrics: dict, promote: bool) -> str:
    """Store the trained adapter as a new version (promoted when the gate said so); returns the version."""
    lm = rt.lm
    data = adapters.to_bytes(adapters.state(lm), base_fingerprint=lm.fingerprint, spec=adapters.spec_of(lm), info=info)
    registry = AdapterRegistry(rt.memories.client)
    version = registry.publish(data, base_fingerprint=lm.fingerprint, metrics=metrics)
    if promote:
        registry.promote(version)
    return version


def _is_heldout(feedback_id: int, fraction: float) -> bool:
    """A fixed split by id: a row is held out (never trained on) in every run or in none."""
    return fraction > 0 and (feedback_id * 2654435761) % 1000 < fraction * 1000


def feedback_examples() -> tuple[list[tuple[int, str, rlgf.Example]], int]:
    """(feedback id, knowledge base, example) for every row with a usable answer, and the newest feedback id."""
    rt = runtime()
    out: list[tuple[int, str, rlgf.Example]] = []
    with db.session() as s:
        rows = s.exec(
            select(Feedback, Query, KnowledgeBase, Answer)
            .join(Query, Feedback.query_id == Query.id)
            .join(KnowledgeBase, Query.kb_id == KnowledgeBase.id)
            .join(Answer, Answer.query_id == Query.id, isouter=True)
            .order_by(Feedback.id)
        ).all()
        newest = max((f.id for f, *_ in rows), default=0)
        for fb, query, kb, answer in rows:
            gold = fb.corrected_answer or (answer.text if fb.rating > 0 and answer is not None else None)
            if not gold:
                continue  # "bad" with no correction: nothing to learn toward
            if fb.evidence:
                doc = fb.evidence[0]["document"]
                spans = tuple((e["start"], e["end"]) for e in fb.evidence if e["document"] == doc)
                key = doc_key(doc)
            else:
                ready = s.exec(
                    select(Document.id).where(Document.kb_id == kb.id, Document.status.in_(db.ANSWERABLE))
                ).all()
                if not ready:
                    continue
                key = pipeline.route_documents(
                    rt.index, rt.embedder, kb.name, query.text, [doc_key(i) for i in ready], limit=1
                )[0]
                spans = ()
            out.append((fb.id, kb.name, rlgf.Example(key, query.text, gold, spans)))
    return out, newest


def _corpus(rt, kb_of: dict[str, str], report: Progress) -> rlgf.Documents:
    """The documents feedback is about: memories re-hydrated (or rebuilt), chunks as ingestion cut them."""
    corpus = rlgf.Documents(rt.lm, rt.embedder, rt.index, rt.settings.top_k)
    keys = sorted(kb_of, key=doc_id_of)
    for i, key in enumerate(keys):
        report("re-hydrating memories", i, len(keys))
        kb = kb_of[key]
        text = document_text(key)  # one read serves the rebuild (if needed) and the chunks
        memory, _ = pipeline.recall(rt.memories, kb, key, rt.lm, text_of=lambda _key, t=text: t, settings=rt.settings)
        corpus.add(key, kb, memory, chunk_document(key, text, rt.lm.tokenizer))
    return corpus
