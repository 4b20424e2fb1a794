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
    if size == 0:
        raise BadDocument(f"{path}: is empty")
    raw = path.read_bytes()
    if raw.startswith(b"%PDF-") or path.suffix.lower() == ".pdf":
        return _pdf_text(path, raw)
    if b"\x00" in raw[:8192]:
        raise BadDocument(f"{path}: looks binary, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadDocument(f"{path}: is not UTF-8 text") from None
    if not text.strip():
        raise BadDocument(f"{path}: is empty")
    return text


def _pdf_text(path: Path, raw: bytes) -> str:
    """Text of a PDF's pages, one paragraph break between pages."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        locked = reader.is_encrypted and not reader.decrypt("")
        pages = [] if locked else [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError) as exc:
        raise BadDocument(f"{path}: not a readable PDF ({exc})") from None
    if locked:
        raise BadDocument(f"{path}: the PDF is encrypted")
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        raise BadDocument(f"{path}: the PDF has no extractable text (scanned pages need OCR first)")
    return text
