"""Where a webhook may go, and how its receiver knows it came from us.

A callback URL is the server making a request on a client's say-so, so it is
guarded against request forgery: http(s) only, no credentials in the URL,
and every address the host resolves to must be public, unless the
operator's allow-list (``MEMORAG_WEBHOOK_HOSTS``: host names, addresses or
networks) names it. With an allow-list set, only what it names is allowed.
The check runs when the query is asked and again just before each attempt
(a name may resolve elsewhere later). Redirects are never followed.

The signature is Stripe-style: ``X-Memorag-Signature: t=<unix time>,v1=<hex>``,
the HMAC-SHA256 of ``"<t>.<body>"`` with the asking key's webhook secret;
``verify`` is what a receiver runs (it also refuses old timestamps, so a
captured delivery cannot be replayed later).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Memorag-Signature"
Resolver = Callable[[str, int], list[str]]


class CallbackRefused(ValueError):
    """The callback URL may not be called; the message says why."""


def _resolve(host: str, port: int) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        raise CallbackRefused(f"the callback host {host!r} does not resolve ({exc.strerror})") from None


def parse_allowed(setting: str) -> list[str]:
    return [part.strip().lower() for part in setting.split(",") if part.strip()]


def _allowed_by(address: str, host: str, allowed: Sequence[str]) -> bool:
    ip = ipaddress.ip_address(address)
    for entry in allowed:
        if entry == host.lower():
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_callback(url: str, allowed: Sequence[str] = (), resolve: Resolver = _resolve) -> str:
    """``url`` if a webhook may be sent there; raises CallbackRefused naming the reason."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused(f"a callback must be an http or https URL, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise CallbackRefused("the callback URL has no host")
    if parts.username or parts.password:
        raise CallbackRefused("the callback URL may not carry credentials; verify the signature instead")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackRefused("the callback URL's port is not a number between 0 and 65535") from None
    for address in resolve(parts.hostname, port):
        if allowed:
            if not _allowed_by(address, parts.hostname, allowed):
                raise CallbackRefused(f"{parts.hostname} ({address}) is not in MEMORAG_WEBHOOK_HOSTS")
        elif not ipaddress.ip_address(address).is_global:
            raise CallbackRefused(
                f"{parts.hostname} resolves to {address}, a private, loopback or reserved address; "
                "an operator may allow it in MEMORAG_WEBHOOK_HOSTS"
            )
    return url.strip()


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The signature header's value for ``body`` sent at unix time ``at`` (now)."""
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of now (a receiver's check)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, stamp), f"t={stamp},v1={fields.get('v1', '')}")
