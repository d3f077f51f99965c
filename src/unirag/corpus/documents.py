"""Documents from real files: PDF, HTML, Word .docx, Markdown, plain text (and JSONL / TSV rows).

Every reader goes through a maintained library: ``pypdf`` (text per page, the outline's headings),
``trafilatura`` (the main content of a web page: title, headings, paragraphs, lists and tables;
navigation, footers and banners dropped), ``python-docx`` (paragraphs, headings, tables) and
``markdown-it-py`` (headings kept as section titles). Install them with ``pip install unirag[ingest]``.

The format follows the content: ``%PDF`` is a PDF, a zip holding ``word/document.xml`` a Word file,
text starting with ``<!doctype html`` or ``<html`` a web page, whatever the extension; the extension
only decides between Markdown, JSONL, TSV and plain text for UTF-8 text.

A :class:`Document` is a list of :class:`Block` (a paragraph, heading, list item or table, with its
section heading and page); :attr:`Document.text` joins them with blank lines and every block knows
its character offsets in that text. A file that cannot be read raises :class:`DocumentError` whose
``status`` is ``failed`` (encrypted or corrupt file, binary file, undecodable text) or ``skipped``
(nothing to index: an empty file, a PDF without a text layer) and whose ``reason`` says why.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Document", "DocumentError", "FORMATS", "iter_files", "read_document", "sniff_format"]

FORMATS = ("pdf", "docx", "html", "markdown", "text", "jsonl", "tsv")
_MD_EXT = {".md", ".markdown", ".mdown", ".mkd", ".mdx"}
_HTML_EXT = {".html", ".htm", ".xhtml"}
_JSONL_EXT = {".jsonl", ".ndjson"}
_TSV_EXT = {".tsv", ".tab"}


class DocumentError(Exception):
    """A file that gives no passages: ``status`` is ``failed`` (it could not be read) or ``skipped``
    (it holds no text); ``reason`` is one line for people."""

    def __init__(self, reason: str, status: str = "failed", fmt: str = ""):
        super().__init__(reason)
        self.reason, self.status, self.format = reason, status, fmt


@dataclass
class Block:
    """One unit of a document's text: a heading, paragraph, list item, table or record.

    ``section`` is the innermost heading above it (``""`` before any), ``headings`` the whole
    heading path, ``page`` the 1-based PDF page, ``start`` / ``end`` its offsets in
    :attr:`Document.text`. Records (JSONL / TSV rows) carry ``record_id`` and ``title``."""

    text: str
    kind: str = "text"
    section: str = ""
    headings: tuple[str, ...] = ()
    page: int | None = None
    start: int = 0
    end: int = 0
    record_id: str | None = None
    title: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class Document:
    """A source file read into blocks. ``id`` is its path relative to the folder it was found in."""

    id: str
    path: str
    format: str
    title: str
    blocks: list[Block]
    sha256: str
    size: int
    pages: int | None = None

    def __post_init__(self) -> None:
        pos = 0
        for b in self.blocks:
            b.start, b.end = pos, pos + len(b.text)
            pos = b.end + 2
        self._text = "\n\n".join(b.text for b in self.blocks)

    @property
    def text(self) -> str:
        """The extracted text: blocks joined by blank lines (the offsets refer to it)."""
        return self._text


# --- format detection ------------------------------------------------------------------------
def sniff_format(data: bytes, name: str = "") -> str:
    """The format of a file's bytes (see the module doc); raises :class:`DocumentError` for a file
    that is no supported format (binary) or whose content contradicts a .pdf / .docx name."""
    ext = os.path.splitext(name)[1].lower()
    if data[:1024].lstrip().startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            what = "corrupt .docx: a damaged zip container" if ext == ".docx" else "corrupt zip container"
            raise DocumentError(f"{what} ({exc})", fmt="docx" if ext == ".docx" else "") from None
        if "word/document.xml" in names:
            return "docx"
        if ext == ".docx":
            raise DocumentError("corrupt .docx: the zip holds no word/document.xml", fmt="docx")
        raise DocumentError("binary file: a zip archive that is not a Word document")
    if ext == ".pdf":
        raise DocumentError("corrupt PDF: no %PDF header", fmt="pdf")
    if ext == ".docx":
        raise DocumentError("corrupt .docx: not a zip container", fmt="docx")
    if _utf16_bom(data) is None and b"\x00" in data[:8192]:
        raise DocumentError("binary file: not a supported document format (PDF, .docx, HTML, Markdown, text)")
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if ext in _HTML_EXT or head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if ext in _MD_EXT:
        return "markdown"
    if ext in _JSONL_EXT:
        return "jsonl"
    if ext in _TSV_EXT:
        return "tsv"
    return "text"


def _utf16_bom(data: bytes) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    return None


def _decode(data: bytes) -> str:
    enc = _utf16_bom(data) or "utf-8-sig"
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        raise DocumentError(f"undecodable text: not {enc.replace('-sig', '').upper()} "
                            f"(byte 0x{data[exc.start]:02x} at offset {exc.start})", fmt="text") from None


def _stem(path: str) -> str:
    return Path(path).stem.replace("_", " ")


def _norm(text: str) -> str:
    return re.sub(r"[ \t\r\f\v]+", " ", re.sub(r"\s*\n\s*", "\n", text)).strip()


# --- the readers -------------------------------------------------------------------------------
def read_document(path: str | os.PathLike, doc_id: str | None = None, data: bytes | None = None) -> Document:
    """Read one file (``data``: its bytes, when already read) into a :class:`Document`; raises
    :class:`DocumentError` with the reason when it cannot be read or holds no text."""
    path = Path(path)
    doc_id = doc_id or path.name
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DocumentError(f"unreadable file ({exc.strerror or exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        raise DocumentError("empty file", status="skipped")
    fmt = sniff_format(data, path.name)
    try:
        reader = _READERS[fmt]
        title, blocks, pages = reader(data, str(path))
    except DocumentError as exc:
        exc.format = exc.format or fmt
        raise
    except ImportError as exc:
        raise DocumentError(f"{fmt} reader not installed ({exc.name}): pip install 'unirag[ingest]'", fmt=fmt) from None
    except Exception as exc:  # a library's parse error on a damaged file
        raise DocumentError(f"corrupt {fmt} file ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
                            fmt=fmt) from None
    blocks = [b for b in blocks if b.text.strip()]
    if not blocks:
        why = {"pdf": "no extractable text (image-only or empty PDF; no OCR is done)",
               "html": "no main content found in the page"}.get(fmt, "no text in the document")
        raise DocumentError(why, status="skipped", fmt=fmt)
    return Document(doc_id, str(path), fmt, title or _stem(str(path)), blocks, digest, len(data), pages)


def _read_text(data: bytes, path: str):
    text = _decode(data)
    blocks = [Block(_norm(p)) for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]
    return "", blocks, None


def _inline_text(token) -> str:
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts) if token.children else token.content


class _Sections:
    """The heading stack while walking a document."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []
        self.title = ""

    def heading(self, level: int, text: str) -> Block:
        self.stack = [(lv, t) for lv, t in self.stack if lv < level] + [(level, text)]
        if level <= 1 and not self.title:
            self.title = text
        return self.block(text, "heading")

    def block(self, text: str, kind: str = "text", page: int | None = None) -> Block:
        heads = tuple(t for _, t in self.stack)
        return Block(text, kind, heads[-1] if heads else "", heads, page)


def _read_markdown(data: bytes, path: str):
    from markdown_it import MarkdownIt

    text = _decode(data)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    sec, blocks = _Sections(), []
    level = None
    row: list[str] | None = None
    table: list[str] | None = None
    for tok in tokens:
        t = tok.type
        if t == "heading_open":
            level = int(tok.tag[1:])
        elif t == "table_open":
            table = []
        elif t == "table_close":
            blocks.append(sec.block("\n".join(table or []), "table"))
            table = None
        elif t == "tr_open":
            row = []
        elif t == "tr_close" and table is not None:
            table.append(" | ".join(row or []))
            row = None
        elif t == "inline":
            content = _norm(_inline_text(tok))
            if row is not None:
                row.append(content)
            elif level is not None:
                blocks.append(sec.heading(level, content))
                level = None
            elif content:
                blocks.append(sec.block(content))
        elif t in ("fence", "code_block", "html_block") and tok.content.strip():
            blocks.append(sec.block(tok.content.strip("\n"), "code"))
    return sec.title, blocks, None


def _read_html(data: bytes, path: str):
    import trafilatura

    doc = trafilatura.bare_extraction(data, include_tables=True, include_comments=False, with_metadata=True)
    if doc is None or getattr(doc, "body", None) is None:
        return "", [], None
    sec, blocks = _Sections(), []
    for el in doc.body:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag == "head":
            rend = el.get("rend") or "h2"
            level = int(rend[1:]) if re.fullmatch(r"h[1-6]", rend) else 2
            blocks.append(sec.heading(level, _norm(" ".join(el.itertext()))))
        elif tag == "list":
            for item in el.iter("item"):
                blocks.append(sec.block(_norm(" ".join(item.itertext())), "list"))
        elif tag == "table":
            rows = [" | ".join(_norm(" ".join(c.itertext())) for c in r.iter("cell")) for r in el.iter("row")]
            blocks.append(sec.block("\n".join(r for r in rows if r.strip(" |")), "table"))
        else:
            blocks.append(sec.block(_norm(" ".join(el.itertext()))))
    title = _norm(getattr(doc, "title", None) or "") or sec.title
    return title, blocks, None


def _read_docx(data: bytes, path: str):
    import docx
    from docx.table import Table

    try:
        d = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise DocumentError(f"corrupt .docx ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})",
                            fmt="docx") from None
    sec, blocks = _Sections(), []
    for item in d.iter_inner_content():
        if isinstance(item, Table):
            rows = []
            for r in item.rows:
                cells: list[str] = []
                for c in r.cells:  # a merged cell appears once per grid column: keep it once
                    t = _norm(c.text)
                    if not cells or cells[-1] != t:
                        cells.append(t)
                rows.append(" | ".join(cells))
            blocks.append(sec.block("\n".join(r for r in rows if r.strip(" |")), "table"))
            continue
        text = _norm(item.text)
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        m = re.fullmatch(r"Heading (\d)", style)
        if style == "Title":
            blocks.append(sec.heading(0, text))
        elif m:
            blocks.append(sec.heading(int(m.group(1)), text))
        else:
            blocks.append(sec.block(text, "list" if style.startswith("List") else "text"))
    title = _norm(d.core_properties.title or "") or sec.title
    return title, blocks, None


def _pdf_outline(reader) -> dict[int, list[str]]:
    """0-based page -> the outline titles that start on it, in outline order."""
    heads: dict[int, list[str]] = {}

    def walk(items) -> None:
        for it in items:
            if isinstance(it, list):
                walk(it)
                continue
            try:
                page = reader.get_destination_page_number(it)
            except Exception:
                continue
            if page is not None and page >= 0 and getattr(it, "title", None):
                heads.setdefault(page, []).append(_norm(str(it.title)))

    try:
        walk(reader.outline)
    except Exception:
        pass
    return heads


def _read_pdf(data: bytes, path: str):
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
    except Exception as exc:
        raise DocumentError(f"corrupt PDF ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})", fmt="pdf") from None
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except Exception as exc:
            raise DocumentError(f"encrypted PDF that cannot be opened ({type(exc).__name__}: {exc})", fmt="pdf") from None
        if not ok:
            raise DocumentError("encrypted PDF: a password is needed to read it", fmt="pdf")
    outline = _pdf_outline(reader)
    current = ""
    blocks: list[Block] = []
    for i, page in enumerate(reader.pages):
        text = page.extract_text() or ""
        # split the page where an outline heading that starts on it appears in its text
        cuts: list[tuple[int, str]] = []
        pos = 0
        for title in outline.get(i, []):
            at = text.find(title, pos) if title else -1
            if at < 0:
                cuts.append((pos, title))  # heading not found in the text: it applies from here on
            else:
                cuts.append((at, title))
                pos = at + len(title)
        bounds = [(0, current)] + cuts
        for j, (start, section) in enumerate(bounds):
            end = bounds[j + 1][0] if j + 1 < len(bounds) else len(text)
            for para in re.split(r"\n[ \t]*\n", text[start:end]):
                para = _norm(para)
                if para:
                    blocks.append(Block(para, "text", section, (section,) if section else (), i + 1))
            current = section
    title = ""
    try:
        title = _norm(str((reader.metadata or {}).get("/Title") or ""))
    except Exception:
        pass
    return title, blocks, len(reader.pages)


def _read_records(fmt: str):
    def read(data: bytes, path: str):
        from unirag.corpus.passage import CorpusError
        from unirag.corpus.readers import read_jsonl, read_tsv

        _decode(data)
        try:
            rows = list((read_jsonl if fmt == "jsonl" else read_tsv)(path))
        except CorpusError as exc:
            raise DocumentError(str(exc), fmt=fmt) from None
        blocks = [Block(p.text, "record", record_id=p.id, title=p.title, meta=dict(p.meta)) for p in rows]
        return "", blocks, None

    return read


_READERS = {"pdf": _read_pdf, "docx": _read_docx, "html": _read_html, "markdown": _read_markdown,
            "text": _read_text, "jsonl": _read_records("jsonl"), "tsv": _read_records("tsv")}


# --- walking folders ---------------------------------------------------------------------------
def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def iter_files(root: str | os.PathLike, include: Sequence[str] = (), exclude: Sequence[str] = (),
               hidden: bool = False) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of every file under ``root``, recursively, sorted.

    ``include`` / ``exclude``: glob patterns (``fnmatch``; ``*`` also crosses ``/``) matched against
    the relative path and the file name; with ``include`` only matching files are kept, ``exclude``
    drops files and whole folders. Hidden files and folders (``.name``) are skipped unless
    ``hidden``. Symbolic links to folders are not followed."""
    root = Path(root)
    for dirpath, dirs, files in os.walk(root):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirs[:] = sorted(d for d in dirs if (hidden or not d.startswith("."))
                         and not _matches(rel_dir + d, exclude) and not _matches(rel_dir + d + "/", exclude))
        for name in sorted(files):
            if not hidden and name.startswith("."):
                continue
            rel = rel_dir + name
            if include and not _matches(rel, include):
                continue
            if exclude and _matches(rel, exclude):
                continue
            yield rel, base / name
