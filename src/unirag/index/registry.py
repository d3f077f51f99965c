"""The document registry of an index folder: ``sources.json``.

It maps each source document (id: its path relative to the folder it was ingested from) to what
the index knows of it::

    {"format": "unirag-sources/1",
     "chunking": {"max_tokens": 200, "overlap": 0, "split_words": 0, "tokenizer": "..."},
     "documents": {"notes/a.md": {"path": "/abs/notes/a.md", "format": "markdown", "title": "...",
                                  "sha256": "...", "size": 1234, "mtime_ns": 1700000000000000000,
                                  "status": "indexed", "reason": "", "passages": ["notes/a.md#0"],
                                  "pages": null, "updated": "2024-01-01T00:00:00Z"}}}

``status`` is ``indexed``, ``skipped`` (nothing to index, e.g. an empty file) or ``failed`` (with
``reason``; a document that was indexed before keeps its old passages and says so). The file is
written with the rest of a version (inside the atomic swap) and listed in the manifest's checksums,
so it always describes exactly the passages of its version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unirag.index.errors import IndexFormatError

REGISTRY_FILE = "sources.json"
REGISTRY_FORMAT = "unirag-sources/1"

__all__ = ["REGISTRY_FILE", "empty_registry", "load_registry", "prune_registry", "write_registry"]


def empty_registry() -> dict[str, Any]:
    """A registry with no document."""
    return {"format": REGISTRY_FORMAT, "chunking": {}, "documents": {}}


def load_registry(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The registry of an index folder, or ``None`` when it has none (built from passages)."""
    path = Path(folder) / REGISTRY_FILE
    if not path.is_file():
        return None
    try:
        reg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path}: corrupted document registry ({exc})") from None
    if not isinstance(reg, dict) or reg.get("format") != REGISTRY_FORMAT or not isinstance(reg.get("documents"), dict):
        raise IndexFormatError(f"{path}: not a {REGISTRY_FORMAT} document registry")
    reg.setdefault("chunking", {})
    return reg


def write_registry(folder: str | os.PathLike, registry: dict[str, Any]) -> None:
    """Write ``sources.json`` into a folder being built (the version's atomic swap makes it durable)."""
    docs = dict(sorted(registry.get("documents", {}).items()))
    data = {"format": REGISTRY_FORMAT, "chunking": registry.get("chunking", {}), "documents": docs}
    (Path(folder) / REGISTRY_FILE).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def prune_registry(registry: dict[str, Any], deleted: set[str]) -> dict[str, Any]:
    """The registry without the passage ids in ``deleted`` (passages removed by id, not by document)."""
    if not deleted:
        return registry
    for entry in registry.get("documents", {}).values():
        ids = entry.get("passages") or []
        if any(i in deleted for i in ids):
            entry["passages"] = [i for i in ids if i not in deleted]
    return registry
