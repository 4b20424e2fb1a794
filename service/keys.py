"""API keys: created and revoked by an operator, shown once, stored as salted scrypt hashes.

A key is ``mrg_<id>_<secret>``: the id finds the row, the secret is checked
against its hash. A role holds in one knowledge base, or in every one when
the key has none (an operator's admin key).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlmodel import select

from service.bases import get_kb
from service.errors import Invalid, NotFound
from store import db

ROLES = ("reader", "writer", "admin")  # each may do what the one before it may, and more
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a key's role, in one knowledge base (``kb_id`` None: in all)."""

    key_id: int
    role: str
    kb_id: int | None

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, kb_id: int) -> bool:
        return self.kb_id is None or self.kb_id == kb_id


def _digest(secret: str, salt: str) -> str:
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


@dataclass(frozen=True)
class NewKey:
    """A key as created: the only time either secret is shown."""

    key: str
    webhook_secret: str  # signs the webhooks of the queries this key asks (X-Memorag-Signature)


def create_key(role: str, kb_name: str | None = None) -> str:
    """A new key for ``role`` in ``kb_name`` (None: every knowledge base); the only time it is shown."""
    return new_key(role, kb_name).key


def new_key(role: str, kb_name: str | None = None) -> NewKey:
    """As ``create_key``, with the key's webhook signing secret."""
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    secret, salt, signing = secrets.token_urlsafe(24), secrets.token_hex(16), f"whsec_{secrets.token_urlsafe(24)}"
    with db.session() as s:
        kb_id = None if kb_name is None else get_kb(s, kb_name).id
        row = db.ApiKey(kb_id=kb_id, role=role, salt=salt, digest=_digest(secret, salt), webhook_secret=signing)
        s.add(row)
        s.flush()
        return NewKey(f"mrg_{row.id}_{secret}", signing)


def revoke_key(key_id: int) -> None:
    with db.session() as s:
        row = s.get(db.ApiKey, key_id) if 0 < key_id <= db.MAX_ROW_ID else None
        if row is None or row.revoked_at is not None:
            raise NotFound(f"no active key {key_id}")
        row.revoked_at = db.utcnow()
        s.add(row)


@dataclass(frozen=True)
class KeyInfo:
    id: int
    role: str
    kb: str | None
    revoked: bool


def list_keys() -> list[KeyInfo]:
    with db.session() as s:
        rows = s.exec(select(db.ApiKey, db.KnowledgeBase.name).join(db.KnowledgeBase, isouter=True)).all()
        return [
            KeyInfo(k.id, k.role, name, k.revoked_at is not None) for k, name in sorted(rows, key=lambda r: r[0].id)
        ]


def active_keys() -> int:
    with db.session() as s:
        return len(s.exec(select(db.ApiKey.id).where(db.ApiKey.revoked_at.is_(None))).all())


_K = db.ApiKey
_ACTIVE_KEY = select(_K.role, _K.kb_id, _K.salt, _K.digest).where(_K.id == bindparam("key_id"), _K.revoked_at.is_(None))
_verified: dict[str, int] = {}  # sha256 of a key that passed scrypt -> its id (revocation is checked each time)


def authenticate(token: str) -> Principal | None:
    """The key's principal, or None for a malformed, unknown, wrong or revoked key."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "mrg" or not parts[1].isdigit():
        return None
    key_id, secret = int(parts[1]), parts[2]
    if not 0 < key_id <= db.MAX_ROW_ID:
        return None
    row = db.read_one(_ACTIVE_KEY, {"key_id": key_id})
    if row is None:
        return None
    principal = Principal(key_id, row.role, row.kb_id)
    salt, digest = row.salt, row.digest
    fingerprint = hashlib.sha256(token.encode()).hexdigest()
    if _verified.get(fingerprint) != key_id:
        if not hmac.compare_digest(_digest(secret, salt), digest):
            return None
        _verified[fingerprint] = key_id
    return principal
