"""Read user files into text, refusing what cannot be a document."""

from __future__ import annotations

from pathlib import Path


class BadDocument(ValueError):
    """The file cannot be ingested; the message says why in one line."""


def read_document(path: str | Path, max_mb: float = 20.0) -> str:
    path = Path(path)
    if not path.exists():
        raise BadDocument(f"{path}: no such file")
    if not path.is_file():
        raise BadDocument(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > max_mb * 1024 * 1024:
        raise BadDocument(f"{path}: {size / 2**20:.1f} MB is over the {max_mb:g} MB limit (MEMORAG_MAX_DOCUMENT_MB)")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise BadDocument(f"{path}: looks binary, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadDocument(f"{path}: is not UTF-8 text") from None
    if not text.strip():
        raise BadDocument(f"{path}: is empty")
    return text
