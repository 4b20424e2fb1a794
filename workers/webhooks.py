"""POST a finished query's result to its callback URL, signed; every attempt is recorded.

The row is the truth: a delivery reads the query and its answer when it runs,
so a late retry sends what is there now, and a query whose callback already
landed is not sent again (a question answered twice calls back once).
"""

from __future__ import annotations

import json

import httpx
from sqlmodel import select

from core.callbacks import SIGNATURE_HEADER, CallbackRefused, check_callback, parse_allowed, sign
from core.redact import redact
from core.settings import Settings
from store import db

FINAL = (db.Status.done, db.Status.failed)


def payload(query: db.Query, answer: db.Answer | None, kb_name: str) -> dict:
    body = {
        "event": f"query.{query.status}", "query": query.public_id, "knowledge_base": kb_name,
        "question": query.text, "task": query.task, "status": query.status, "error": query.error,
    }  # fmt: skip
    if answer is not None:
        body |= {"answer": answer.text, "supported": answer.supported, "citation": answer.citation}
    return body


def pending(query_id: int) -> bool:
    """Whether the query has a callback and is finished, and no delivery of it has landed yet."""
    with db.session() as s:
        query = s.get(db.Query, query_id)
        if query is None or not query.callback_url or query.status not in FINAL:
            return False
        landed = s.exec(
            select(db.WebhookDelivery.id).where(db.WebhookDelivery.query_id == query_id, db.WebhookDelivery.delivered)
        ).first()
        return landed is None


def deliver(query_id: int, settings: Settings) -> tuple[bool, int]:
    """One attempt: (done, its number). Done when it landed or there is nothing (more) to send; else try again
    later. Attempts are numbered by the rows already recorded, so a callback re-sent by anyone counts too."""
    if not pending(query_id):
        return True, 0
    with db.session() as s:
        tried = s.exec(select(db.WebhookDelivery.id).where(db.WebhookDelivery.query_id == query_id)).all()
        attempt = len(tried) + 1
        query = s.get(db.Query, query_id)
        answer = s.exec(select(db.Answer).where(db.Answer.query_id == query_id)).first()
        kb = s.get(db.KnowledgeBase, query.kb_id)
        key = s.get(db.ApiKey, query.key_id) if query.key_id else None
        url, body = query.callback_url, json.dumps(payload(query, answer, kb.name if kb else "")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "memorag-webhook"}
    if key is not None and key.webhook_secret:
        headers[SIGNATURE_HEADER] = sign(key.webhook_secret, body)
    status, error, final = None, None, False
    try:
        check_callback(url, parse_allowed(settings.webhook_hosts))  # again: the name may point elsewhere now
        timeout = settings.webhook_timeout_s
        reply = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
        status = reply.status_code
        if not 200 <= status < 300:
            error = f"the receiver answered {status}" + (" (redirects are not followed)" if reply.is_redirect else "")
    except CallbackRefused as exc:
        error, final = str(exc), True  # refused now: no later attempt will be allowed either
    except httpx.HTTPError as exc:
        error = redact(f"{type(exc).__name__}: {exc}")[:500]
    delivered = error is None
    with db.session() as s:
        s.add(db.WebhookDelivery(
            query_id=query_id, url=url, attempt=attempt, status_code=status, error=error, delivered=delivered
        ))  # fmt: skip
    return delivered or final, attempt


def backoff_s(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: 2, 4, 8 ... at most five minutes."""
    return float(min(300, 2**attempt))
