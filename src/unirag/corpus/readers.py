"""Read passages from JSONL, DPR-style TSV or a folder of .txt/.md files."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from unirag.corpus.jsonl import iter_jsonl
from unirag.corpus.passage import CorpusError, Passage

_RESERVED = ("id", "title", "text")


def read_jsonl(path: str | os.PathLike) -> Iterator[Passage]:
    """Yield passages from JSONL: ``id`` and ``text`` required, ``title`` optional, other fields kept as meta."""
    for lineno, row in iter_jsonl(path):
        for key in ("id", "text"):
            if key not in row:
                raise CorpusError(f"{path}:{lineno}: missing field '{key}'")
        if not isinstance(row["text"], str):
            raise CorpusError(f"{path}:{lineno}: field 'text' must be a string")
        title = row.get("title") or ""
        meta = {k: v for k, v in row.items() if k not in _RESERVED}
        yield Passage(id=str(row["id"]), text=row["text"], title=str(title), meta=meta)


def read_tsv(path: str | os.PathLike) -> Iterator[Passage]:
    """Yield passages from a DPR-style TSV with header ``id  text  title`` (the DPR wiki dump format)."""
    path = Path(path)
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None:
            return
        cols = {name.strip().lower(): i for i, name in enumerate(header)}
        if "id" not in cols or "text" not in cols:
            raise CorpusError(f"{path}:1: TSV header must name 'id' and 'text' columns, got {header}")
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise CorpusError(f"{path}:{lineno}: expected {len(header)} columns, got {len(row)}")
            title = row[cols["title"]] if "title" in cols else ""
            meta = {name: row[i] for name, i in cols.items() if name not in _RESERVED}
            yield Passage(id=row[cols["id"]], text=row[cols["text"]], title=title, meta=meta)


def read_folder(path: str | os.PathLike) -> Iterator[Passage]:
    """Yield one passage per .txt/.md file under ``path`` (sorted); id is the relative path, title the stem."""
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()):
        rel = file.relative_to(root).as_posix()
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{file}: not UTF-8 text ({exc.reason})") from None
        yield Passage(id=rel, text=text.strip(), title=file.stem.replace("_", " "), meta={"path": rel})


def read_corpus(path: str | os.PathLike) -> Iterator[Passage]:
    """Read any supported corpus: a folder, ``.jsonl``/``.json`` lines, or ``.tsv``."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_folder(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path)
    if suffix in (".tsv", ".tab"):
        return read_tsv(path)
    raise CorpusError(f"{path}: unknown corpus format '{suffix}' (use .jsonl, .tsv or a folder of .txt/.md)")
