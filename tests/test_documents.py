"""What can be ingested: UTF-8 text and Markdown, PDFs with a text layer; clear refusals otherwise."""

from __future__ import annotations

import re

import pytest
from fpdf import FPDF

from agent.documents import BadDocument, read_document
from agent.outline import chunk_context


def make_pdf(path, pages: list[str]) -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    pdf.output(str(path))


def test_pdf_pages_become_paragraphs(tmp_path):
    path = tmp_path / "report.pdf"
    make_pdf(path, ["The bridge was built by William Tarrant.", "It has five arches of red sandstone."])
    text = read_document(path)
    assert "William Tarrant" in text and "five arches" in text
    assert text.index("Tarrant") < text.index("arches")
    # A page break is a paragraph break (the chunker's blank-line boundary), and each page is counted.
    first, second = re.split(r"\n\s*\n", text)
    assert "Tarrant" in first and "arches" in second
    assert chunk_context(text, text.index("arches")).endswith("(page 2)")
    assert chunk_context(text, 0).endswith("(page 1)")


def test_a_pdf_without_text_asks_for_ocr(tmp_path):
    path = tmp_path / "scan.pdf"
    make_pdf(path, [""])
    with pytest.raises(BadDocument, match="no extractable text"):
        read_document(path)


def test_a_broken_pdf_is_refused_in_one_line(tmp_path):
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n garbage that is not a PDF body")
    with pytest.raises(BadDocument, match="not a readable PDF"):
        read_document(path)


def test_text_and_markdown_are_read_as_utf8(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Título\n\nDatos en español.", encoding="utf-8")
    assert read_document(path).startswith("# Título")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(BadDocument, match="not UTF-8"):
        read_document(latin)
