"""Real document files written by real writers, shared by the ingest and server tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_pdf(path: Path, pages: Sequence[tuple[str, str]]) -> Path:
    """A PDF (fpdf2) with one page per ``(heading, body)``, each heading an outline section."""
    import fpdf

    pdf = fpdf.FPDF()
    pdf.set_title("Seabird report")
    for head, body in pages:
        pdf.add_page()
        pdf.start_section(head)
        pdf.set_font("helvetica", "B", 16)
        pdf.cell(text=head)
        pdf.ln(12)
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 7, body)
    pdf.output(str(path))
    return path
