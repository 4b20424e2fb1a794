"""Keep passwords in URLs out of messages, logs and status lines.

A ``MEMORAG_REDIS_URL`` or ``MEMORAG_DATABASE_URL`` may carry a password
(``rediss://:secret@host``, ``postgresql://user:secret@host/db``, or a
``password=`` parameter); anything the service prints or logs goes through
``redact`` first, and every log record through ``RedactingFilter``.
"""

from __future__ import annotations

import logging
import re

_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@\s/]*)@", re.IGNORECASE)
_PARAM = re.compile(r"(?P<name>\b(?:password|passwd|pwd)=)(?P<secret>[^&\s'\"]+)", re.IGNORECASE)
HIDDEN = "***"


def redact(text: str) -> str:
    """``text`` with every URL password replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{HIDDEN}@", text)
    return _PARAM.sub(lambda m: f"{m['name']}{HIDDEN}", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (arguments and traceback included) without passwords."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Redact every record that reaches ``logger``'s handlers (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
