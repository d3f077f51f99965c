"""``IndexFolder``: the one owner of an index folder's layout, manifest and checksums.

Layout::

    <folder>/manifest.json   what built the folder + SHA-256 of every other file
    <folder>/index.faiss     the dense FAISS index (absent in a BM25-only folder, and in a folder whose
                             manifest points at an external vector store: ``extra["store"]``)
    <folder>/docs/           the doc store (see :class:`unirag.corpus.DocStore`)
    <folder>/bm25/           the BM25 index (absent when built with ``--no-bm25``)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from unirag.config.fs import sha256_file
from unirag.index.errors import IndexFormatError
from unirag.index.manifest import FORMAT, Manifest

INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
DOCS_DIR = "docs"
BM25_DIR = "bm25"


class IndexFolder:
    """Paths and checks of one index folder (it need not exist yet)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def cached(cls, name: str) -> IndexFolder:
        """The index folder ``<cache_dir()>/indexes/<name>`` (nothing is created)."""
        from unirag.config.paths import cache_dir

        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"bad cached index name {name!r}: one plain folder name expected")
        return cls(cache_dir() / "indexes" / name)

    def __repr__(self) -> str:
        return f"IndexFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # --- layout ----------------------------------------------------------------------------
    @property
    def manifest_file(self) -> Path:
        """``manifest.json``."""
        return self.path / MANIFEST_FILE

    @property
    def faiss_file(self) -> Path:
        """``index.faiss`` (the dense index)."""
        return self.path / INDEX_FILE

    @property
    def docs_dir(self) -> Path:
        """``docs/`` (the doc store)."""
        return self.path / DOCS_DIR

    @property
    def bm25_dir(self) -> Path:
        """``bm25/`` (the BM25 index)."""
        return self.path / BM25_DIR

    def exists(self) -> bool:
        """Whether the folder holds a manifest (a complete, atomically written index)."""
        return self.manifest_file.is_file()

    # --- manifest and checks ---------------------------------------------------------------
    def read_manifest(self) -> Manifest:
        """The manifest, with clear errors for a missing, foreign or corrupted folder."""
        if not self.path.is_dir():
            raise IndexFormatError(f"{self.path}: no such index folder (build one with `unirag index build`)")
        if not self.manifest_file.is_file():
            raise IndexFormatError(f"{self.path}: not a unirag index (no {MANIFEST_FILE})")
        try:
            manifest = Manifest.load(self.manifest_file)
        except ValueError as exc:
            raise IndexFormatError(f"{self.manifest_file}: corrupted manifest ({exc})") from None
        if manifest.format != FORMAT:
            raise IndexFormatError(
                f"{self.manifest_file}: unsupported format {manifest.format!r} (expected {FORMAT!r})"
            )
        return manifest

    def verify(self, manifest: Manifest | None = None, parts: Iterable[str] | None = None) -> Manifest:
        """Check the SHA-256 of every file the manifest lists (or only those under ``parts``, e.g.
        ``("docs", "bm25")``); raise :class:`IndexFormatError` naming the first bad file.

        A part that exists on disk but has no file in the manifest is reported too.
        """
        manifest = manifest or self.read_manifest()
        wanted = tuple(parts) if parts is not None else None
        if wanted is not None:
            for part in wanted:
                listed = any(rel == part or rel.startswith(part + "/") for rel in manifest.files)
                if (self.path / part).exists() and not listed:
                    raise IndexFormatError(f"{self.path / part}: not listed in {self.manifest_file}; rebuild the index")
        for rel, digest in manifest.files.items():
            if wanted is not None and not any(rel == p or rel.startswith(p + "/") for p in wanted):
                continue
            f = self.path / rel
            if not f.is_file():
                raise IndexFormatError(f"{f}: missing (listed in the manifest)")
            if sha256_file(f) != digest:
                raise IndexFormatError(f"{f}: checksum mismatch: the file is truncated or corrupted; rebuild the index")
        return manifest

    @property
    def has_dense(self) -> bool:
        """Whether the manifest lists a dense index (``index.faiss`` or an external store, dimension > 0)."""
        return _has_dense(self.read_manifest())

    @property
    def has_bm25(self) -> bool:
        """Whether the manifest lists a BM25 index (files under ``bm25/``)."""
        return _has_bm25(self.read_manifest())

    def require(self, kind: str, manifest: Manifest | None = None) -> Manifest:
        """Raise :class:`IndexFormatError` naming the folder unless it holds ``kind``
        (``dense``, ``bm25`` or ``hybrid``); returns the manifest."""
        manifest = manifest or self.read_manifest()
        if kind in ("dense", "hybrid") and not _has_dense(manifest):
            raise IndexFormatError(f"{self.path}: no dense index in this folder (built with --no-dense); "
                                   f"use --retriever bm25 or rebuild with --dense")
        if kind in ("bm25", "hybrid") and not _has_bm25(manifest):
            raise IndexFormatError(f"{self.path}: no BM25 index in this folder (build it with `unirag index build --bm25`)")
        return manifest


def _has_dense(manifest: Manifest) -> bool:
    store = manifest.extra.get("store") if isinstance(manifest.extra, dict) else None
    return manifest.dim > 0 and (INDEX_FILE in manifest.files or bool(store))


def _has_bm25(manifest: Manifest) -> bool:
    return any(rel.startswith(BM25_DIR + "/") for rel in manifest.files)
