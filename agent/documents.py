"""Read user files into text, refusing what cannot be a document or is over a bound.

Nothing here imports torch: the manager and the API check files before
anything is queued, and counting tokens needs only the model's tokenizer file.
"""

from __future__ import annotations

import functools
from pathlib import Path


class BadDocument(ValueError):
    """The file cannot be ingested; the message says why in one line."""


def read_document(path: str | Path, max_mb: float = 20.0, max_pages: int = 2000) -> str:
    path = Path(path)
    if not path.exists():
        raise BadDocument(f"{path}: no such file")
    if not path.is_file():
        raise BadDocument(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > max_mb * 1024 * 1024:
        raise BadDocument(f"{path}: {size / 2**20:.1f} MB is over the {max_mb:g} MB limit (MEMORAG_MAX_DOCUMENT_MB)")
    if size == 0:
        raise BadDocument(f"{path}: is empty")
    raw = path.read_bytes()
    if raw.startswith(b"%PDF-") or path.suffix.lower() == ".pdf":
        return _pdf_text(path, raw, max_pages)
    if b"\x00" in raw[:8192]:
        raise BadDocument(f"{path}: looks binary, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadDocument(f"{path}: is not UTF-8 text") from None
    if not text.strip():
        raise BadDocument(f"{path}: is empty")
    return text


def _pdf_text(path: Path, raw: bytes, max_pages: int) -> str:
    """Text of a PDF's pages; a form feed on its own line between pages, so a chunk knows its page."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PdfStreamError

    try:
        reader = PdfReader(io.BytesIO(raw))
        locked = reader.is_encrypted and not reader.decrypt("")
        if locked:
            raise BadDocument(f"{path}: the PDF is encrypted")
        if len(reader.pages) > max_pages:
            limit = f"the {max_pages} page limit (MEMORAG_MAX_PDF_PAGES)"
            raise BadDocument(f"{path}: {len(reader.pages)} pages is over {limit}")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        if isinstance(exc, BadDocument):
            raise
        raise BadDocument(f"{path}: not a readable PDF ({type(exc).__name__})") from None
    text = "\n\f\n".join(p.strip() for p in pages)  # empty pages too: the count is the page number
    if not text.strip():
        raise BadDocument(f"{path}: the PDF has no extractable text (scanned pages need OCR first)")
    return text


def count_tokens(text: str, tokenizer_file: Path | None) -> int:
    """The text's length in the memory model's tokens; a byte count (an upper bound for byte-level BPE) when the
    tokenizer file is not on this machine."""
    if tokenizer_file is None or not tokenizer_file.exists():
        return len(text.encode())
    return len(_tokenizer(str(tokenizer_file)).encode(text, add_special_tokens=False).ids)


@functools.cache
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def check_length(name: str, text: str, max_tokens: int, tokenizer_file: Path | None) -> None:
    """Refuse a document longer than ``max_tokens``; short texts are never tokenized (tokens <= UTF-8 bytes)."""
    if len(text.encode()) <= max_tokens:
        return
    tokens = count_tokens(text, tokenizer_file)
    if tokens > max_tokens:
        raise BadDocument(
            f"{name}: {tokens:,} tokens is over the {max_tokens:,} token limit (MEMORAG_MAX_DOCUMENT_TOKENS)"
        )
