"""Documents into an index folder, kept current: add files, delete documents, mirror a folder.

    from unirag.retrieval.ingest import add_files, delete_documents, list_documents, sync_folder

    res = sync_folder("my-index", "~/notes", encoder="all-minilm-l6-v2")  # creates the index if needed
    print(res.summary(), [d.reason for d in res.failed])

Every operation writes the next version of the index folder through
:func:`unirag.retrieval.update.update_index` (one atomic swap: dense index, BM25, doc store and the
document registry ``sources.json`` change together, or not at all) while holding the folder's
writer lock, so what it compares against is the version it replaces.

What is read again: a file whose size and modification time (``mtime_ns``) equal the registry's is
unchanged without being opened (``checksum=True`` hashes every file instead); any other file is
hashed (SHA-256 of its bytes) and only a changed hash re-reads it, re-chunks it and re-embeds the
passages whose text changed (the others keep their vectors). A file that cannot be read is
recorded as ``failed`` with its reason (a document indexed before keeps its previous passages) and
the rest of the batch goes on; an empty one is ``skipped``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unirag.config.errors import UsageError
from unirag.corpus.chunking import TokenCounter, chunk_document
from unirag.corpus.documents import DocumentError, iter_files, read_document
from unirag.corpus.passage import CorpusError, Passage
from unirag.index.folder import IndexFolder
from unirag.index.registry import empty_registry, load_registry
from unirag.models.registry import DEFAULT_ENCODER
from unirag.retrieval.update import UnknownPassageError, UpdateResult, remove_stale_versions, update_index, writer_lock

__all__ = ["DocReport", "IngestResult", "add_files", "delete_documents", "list_documents", "sync_folder"]

DEFAULT_MAX_TOKENS = 200


@dataclass
class DocReport:
    """What happened to one document: ``action`` is ``added``, ``changed``, ``unchanged``,
    ``deleted``, ``failed`` or ``skipped``; ``status`` its registry status after the run."""

    id: str
    action: str
    status: str
    reason: str = ""
    passages: int = 0
    path: str = ""
    format: str = ""
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass
class IngestResult:
    """The outcome of :func:`add_files`, :func:`sync_folder` or :func:`delete_documents`.

    ``documents``: one :class:`DocReport` per document touched; ``update``: the passage counts of
    the version written (``None`` when nothing had to change); ``created``: the index folder was
    created by this call; ``removed_passages``: passages of no document dropped by a sync."""

    folder: Path
    documents: list[DocReport] = field(default_factory=list)
    update: UpdateResult | None = None
    created: bool = False
    written: bool = False
    removed_passages: int = 0
    seconds: float = 0.0

    def count(self, action: str) -> int:
        """Documents with this action."""
        return sum(d.action == action for d in self.documents)

    @property
    def failed(self) -> list[DocReport]:
        """Documents that could not be read (now or, unchanged since, before)."""
        return [d for d in self.documents if d.status == "failed"]

    @property
    def skipped(self) -> list[DocReport]:
        """Documents with nothing to index (empty, no text layer)."""
        return [d for d in self.documents if d.status == "skipped"]

    @property
    def ok(self) -> bool:
        """No document failed."""
        return not self.failed

    def summary(self) -> str:
        """One line of counts."""
        parts = [f"{self.count(a)} {a}" for a in ("added", "changed", "unchanged", "deleted")]
        parts += [f"{len(self.failed)} failed", f"{len(self.skipped)} skipped"]
        if self.update is not None:
            parts += [f"{self.update.embedded} passages embedded", f"{self.update.passages} passages in the index"]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, documents and the update's counts."""
        return {"folder": str(self.folder), "ok": self.ok, "created": self.created, "written": self.written,
                "counts": {a: self.count(a) for a in ("added", "changed", "unchanged", "deleted")}
                | {"failed": len(self.failed), "skipped": len(self.skipped)},
                "removed_passages": self.removed_passages,
                "update": None if self.update is None else self.update.to_dict(),
                "seconds": round(self.seconds, 3), "documents": [d.to_dict() for d in self.documents]}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sources(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None, include: Sequence[str],
             exclude: Sequence[str], hidden: bool) -> list[tuple[str, Path]]:
    """(document id, path) of the files named: a folder gives its files (ids relative to it), a file
    its id relative to ``root`` (default: its name)."""
    out: dict[str, Path] = {}
    base = Path(root).resolve() if root is not None else None
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            for rel, f in iter_files(p, include, exclude, hidden):
                out[rel] = f
        elif p.exists():
            if base is not None:
                try:
                    rel = p.resolve().relative_to(base).as_posix()
                except ValueError:
                    raise UsageError(f"{p}: not under --root {root}") from None
            else:
                rel = p.name
            out[rel] = p
        else:
            raise UsageError(f"{p}: no such file or folder")
    return sorted(out.items())


class _Ingest:
    """One ingest run over an index folder, under its writer lock."""

    def __init__(self, folder: Path, encoder: Any, max_tokens: int | None, overlap: int | None,
                 split_words: int | None, factory: str, batch_size: int, progress: bool, record_paths: bool = True):
        self.folder, self.layout = folder, IndexFolder(folder)
        self.record_paths = record_paths
        self.exists = self.layout.exists()
        self.encoder_arg, self.factory, self.batch_size, self.progress = encoder, factory, batch_size, progress
        self.manifest = self.layout.read_manifest() if self.exists else None
        reg = load_registry(folder) if self.exists else None
        self.had_registry = reg is not None
        self.registry = reg or empty_registry()
        self.docs: dict[str, dict] = self.registry["documents"]
        ch = self.registry.get("chunking") or {}
        self.max_tokens = max_tokens if max_tokens is not None else ch.get("max_tokens")
        self.overlap = overlap if overlap is not None else ch.get("overlap", 0)
        self.split_words = split_words if split_words is not None else ch.get("split_words", 0)
        self._enc: Any = None
        self.add: list[Passage] = []
        self.delete: set[str] = set()
        self.reports: list[DocReport] = []
        self.dirty = False

    # --- the encoder and its tokenizer, loaded only when something is read ------------------
    @property
    def dense(self) -> bool:
        return self.layout.has_dense if self.exists else True

    def encoder(self) -> Any:
        if self._enc is None:
            from unirag.retrieval.update import _resolve_encoder

            if not self.dense:
                return None
            if self.exists:
                self._enc = _resolve_encoder(self.manifest, self.encoder_arg, self.folder)
            else:
                enc = self.encoder_arg or DEFAULT_ENCODER  # a new index: the default encoder unless told
                if isinstance(enc, str):
                    from unirag.models.onnx_encoder import corpus_encoder

                    enc = corpus_encoder(enc)
                self._enc = enc
        return self._enc

    def counter(self) -> TokenCounter:
        enc = self.encoder()
        tok = getattr(enc, "tokenizer", None) if enc is not None else None
        counter = TokenCounter(tok, name=getattr(enc, "name", None))
        if self.max_tokens is None:
            limit = getattr(enc, "max_length", None)
            self.max_tokens = min(DEFAULT_MAX_TOKENS, int(limit) - 2) if limit else DEFAULT_MAX_TOKENS
        self.registry["chunking"] = {"max_tokens": self.max_tokens, "overlap": self.overlap,
                                     "split_words": self.split_words, "tokenizer": counter.name}
        return counter

    # --- files ---------------------------------------------------------------------------------
    def file(self, doc_id: str, path: Path, force: bool, checksum: bool, counter_fn) -> None:
        entry = self.docs.get(doc_id)
        try:
            st = path.stat()
        except OSError as exc:
            self._fail(doc_id, path, DocumentError(f"unreadable file ({exc.strerror or exc})"), None)
            return
        # a file that lives on: its path and mtime (the fast path); an upload's temporary copy: neither
        abspath = str(path.resolve()) if self.record_paths else ""
        mtime_ns = st.st_mtime_ns if self.record_paths else None
        if entry is not None and not force and not checksum and entry.get("size") == st.st_size \
                and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("path") == abspath:
            self._report(doc_id, "unchanged", entry)
            return
        try:
            data = path.read_bytes()
        except OSError as exc:
            self._fail(doc_id, path, DocumentError(f"unreadable file ({exc.strerror or exc})"), None)
            return
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        if entry is not None and not force and entry.get("sha256") == digest:
            if entry.get("size") != st.st_size or entry.get("mtime_ns") != mtime_ns or entry.get("path") != abspath:
                entry.update(size=st.st_size, mtime_ns=mtime_ns, path=abspath)
                self.dirty = True
            self._report(doc_id, "unchanged", entry)
            return
        try:
            doc = read_document(path, doc_id, data)
        except DocumentError as exc:
            self._fail(doc_id, path, exc, (digest, st))
            return
        passages = chunk_document(doc, counter_fn(), self.max_tokens, self.overlap, self.split_words)
        if len({p.id for p in passages}) != len(passages):
            seen: set[str] = set()
            dup = next(p.id for p in passages if p.id in seen or seen.add(p.id))
            self._fail(doc_id, path, DocumentError(f"duplicate passage id {dup!r} (a record id given twice)",
                                                   fmt=doc.format), (digest, st))
            return
        old = set(entry.get("passages") or []) if entry else set()
        new_ids = [p.id for p in passages]
        self.delete |= old - set(new_ids)
        self.delete -= set(new_ids)
        self.add += passages
        self.docs[doc_id] = {"path": abspath, "format": doc.format, "title": doc.title, "sha256": digest,
                             "size": st.st_size, "mtime_ns": mtime_ns, "status": "indexed", "reason": "",
                             "passages": new_ids, "pages": doc.pages, "updated": _now()}
        self.dirty = True
        self._report(doc_id, "changed" if entry is not None else "added", self.docs[doc_id])

    def _fail(self, doc_id: str, path: Path, exc: DocumentError, seen) -> None:
        entry = self.docs.get(doc_id)
        kept = list(entry.get("passages") or []) if entry else []
        reason = exc.reason + (f" (the previous version's {len(kept)} passage(s) are kept)" if kept else "")
        digest, st = seen if seen is not None else ("", None)
        keep = self.record_paths
        self.docs[doc_id] = {"path": str(path.resolve()) if keep else "", "format": exc.format,
                             "title": (entry or {}).get("title", ""), "sha256": digest,
                             "size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st and keep else None,
                             "status": exc.status, "reason": reason, "passages": kept, "pages": None,
                             "updated": _now()}
        self.dirty = True
        self._report(doc_id, exc.status, self.docs[doc_id])

    def _report(self, doc_id: str, action: str, entry: dict) -> None:
        self.reports.append(DocReport(doc_id, action, entry.get("status", ""), entry.get("reason", ""),
                                      len(entry.get("passages") or []), entry.get("path", ""),
                                      entry.get("format", ""), entry.get("sha256", "")))

    def drop(self, doc_id: str) -> None:
        entry = self.docs.pop(doc_id)
        self.delete |= set(entry.get("passages") or [])
        self.dirty = True
        self.reports.append(DocReport(doc_id, "deleted", "deleted", "", len(entry.get("passages") or []),
                                      entry.get("path", ""), entry.get("format", ""), entry.get("sha256", "")))

    # --- writing ---------------------------------------------------------------------------------
    def commit(self, result: IngestResult, missing_ok: bool = True) -> IngestResult:
        result.documents = self.reports
        if not self.dirty and not self.add and not self.delete:
            return result
        if not self.exists:
            if not self.add:
                return result  # nothing readable: no index to create (the reports say why)
            from unirag.retrieval.build import build_index

            enc = self.encoder()
            build_index(self.add, self.folder, encoder=enc, factory=self.factory, batch_size=self.batch_size,
                        progress=self.progress, registry=self.registry, lock=False)
            result.update = UpdateResult(self.folder, added=len(self.add), embedded=len(self.add),
                                         passages=len(self.add))
            result.created = result.written = True
            return result
        enc = self.encoder() if (self.add and self.dense) else self.encoder_arg
        result.update = update_index(self.folder, enc, add=self.add, delete=sorted(self.delete), missing_ok=missing_ok,
                                     batch_size=self.batch_size, progress=self.progress, registry=self.registry,
                                     lock=False)
        result.written = True
        return result


def _run(index: str | os.PathLike, paths: Sequence[str | os.PathLike], encoder: Any, *, mirror: bool,
         root: str | os.PathLike | None, include: Sequence[str], exclude: Sequence[str], hidden: bool,
         max_tokens: int | None, overlap: int | None, split_words: int | None, force: bool, checksum: bool,
         factory: str, batch_size: int, progress: bool, record_paths: bool = True) -> IngestResult:
    t0 = time.perf_counter()
    folder = Path(index)
    sources = _sources(paths, root, include, exclude, hidden)
    result = IngestResult(folder)
    with writer_lock(folder):
        remove_stale_versions(folder)
        run = _Ingest(folder, encoder, max_tokens, overlap, split_words, factory, batch_size, progress, record_paths)
        counter: list[TokenCounter] = []

        def counter_fn() -> TokenCounter:
            if not counter:
                counter.append(run.counter())
            return counter[0]

        for doc_id, path in sources:
            run.file(doc_id, path, force, checksum, counter_fn)
        if mirror:
            present = {d for d, _ in sources}
            for doc_id in sorted(set(run.docs) - present):
                run.drop(doc_id)
            if run.exists:  # passages of no document (e.g. from `index build`): a mirror has none
                result.removed_passages = _orphans(run)
        run.commit(result)
    result.seconds = time.perf_counter() - t0
    return result


def _orphans(run: _Ingest) -> int:
    """Mark for deletion the passages no registered document owns; returns how many."""
    from unirag.corpus.store import DocStore

    owned = {i for e in run.docs.values() for i in (e.get("passages") or [])}
    store = DocStore(run.layout.docs_dir)
    try:
        if len(store) == len(owned) and not run.add:
            return 0  # each passage belongs to a document: nothing to scan
        extra = [pid for pid in store.ids(range(len(store))) if pid not in owned and pid not in run.delete]
    finally:
        store.close()
    new_ids = {p.id for p in run.add}
    extra = [pid for pid in extra if pid not in new_ids]
    run.delete |= set(extra)
    return len(extra)


def add_files(index: str | os.PathLike, paths: str | os.PathLike | Sequence[str | os.PathLike], encoder: Any = None,
              *, root: str | os.PathLike | None = None, include: Sequence[str] = (), exclude: Sequence[str] = (),
              hidden: bool = False, max_tokens: int | None = None, overlap: int | None = None,
              split_words: int | None = None, force: bool = False, checksum: bool = False, factory: str = "Flat",
              batch_size: int = 64, progress: bool = False, record_paths: bool = True) -> IngestResult:
    """Add files and folders to index folder ``index`` (created when missing; ``encoder`` then names
    the embedding model): new files are added, files whose content changed are re-read and only
    their changed passages re-embedded, unchanged ones are left alone; nothing is deleted.

    A folder contributes its files recursively (ids: paths relative to it; ``include`` /
    ``exclude`` globs, ``hidden``); a file's id is its path relative to ``root`` (default: its
    name). ``max_tokens`` / ``overlap`` (tokens of the index's encoder) or ``split_words`` (DPR-style
    windows) set the chunking (default: what the registry recorded, else 200 tokens, capped by the
    encoder's ``max_length``). ``force`` re-reads every file; ``checksum`` hashes every file instead
    of trusting an unchanged size and modification time. ``record_paths=False`` is for temporary
    copies (files uploaded to the server): the registry records no path and no modification time
    of them, so a later add of the same id hashes the file, and an equal hash writes nothing.
    Returns an :class:`IngestResult`."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return _run(index, list(paths), encoder, mirror=False, root=root, include=include, exclude=exclude,
                hidden=hidden, max_tokens=max_tokens, overlap=overlap, split_words=split_words, force=force,
                checksum=checksum, factory=factory, batch_size=batch_size, progress=progress,
                record_paths=record_paths)


def sync_folder(index: str | os.PathLike, folder: str | os.PathLike, encoder: Any = None, *,
                include: Sequence[str] = (), exclude: Sequence[str] = (), hidden: bool = False,
                max_tokens: int | None = None, overlap: int | None = None, split_words: int | None = None,
                force: bool = False, checksum: bool = False, factory: str = "Flat", batch_size: int = 64,
                progress: bool = False) -> IngestResult:
    """Make index folder ``index`` mirror ``folder``: :func:`add_files` of its files, then every
    document not found there (and every passage of no document) is deleted. The result equals a
    fresh index of the folder (same ids, vectors and BM25 scores; rows may be in another order)."""
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: no such folder")
    return _run(index, [folder], encoder, mirror=True, root=None, include=include, exclude=exclude, hidden=hidden,
                max_tokens=max_tokens, overlap=overlap, split_words=split_words, force=force, checksum=checksum,
                factory=factory, batch_size=batch_size, progress=progress)


def delete_documents(index: str | os.PathLike, ids: str | Iterable[str], *, missing_ok: bool = False,
                     encoder: Any = None) -> IngestResult:
    """Remove documents from index folder ``index`` (their passages leave the dense index, BM25 and
    the doc store; their text is in no file of the new version). Each of ``ids`` is a document id,
    a path of a registered file, a folder prefix (``notes/`` removes every document under it) or a
    plain passage id. An unknown one raises :class:`UnknownPassageError` and nothing changes, unless
    ``missing_ok``."""
    t0 = time.perf_counter()
    folder = Path(index)
    wanted = [ids] if isinstance(ids, str) else [str(i) for i in ids]
    if not wanted:
        raise UsageError("nothing to delete: give document ids or paths")
    result = IngestResult(folder)
    with writer_lock(folder):
        remove_stale_versions(folder)
        run = _Ingest(folder, encoder, None, None, None, "Flat", 64, False)
        if not run.exists:
            raise CorpusError(f"{folder}: no such index folder")
        by_path = {e.get("path"): d for d, e in run.docs.items() if e.get("path")}
        missing, passage_ids = [], []
        for raw in wanted:
            key = raw.strip()
            hits = [key] if key in run.docs else []
            if not hits:
                resolved = str(Path(key).expanduser().resolve())
                if resolved in by_path:
                    hits = [by_path[resolved]]
            if not hits:
                prefix = key.rstrip("/") + "/"
                hits = [d for d in run.docs if d.startswith(prefix)]
            if hits:
                for d in hits:
                    if d in run.docs:
                        run.drop(d)
            else:
                passage_ids.append(key)
        if passage_ids:
            from unirag.corpus.store import DocStore

            store = DocStore(run.layout.docs_dir)
            try:
                for pid in passage_ids:
                    (run.delete.add(pid) if pid in store else missing.append(pid))
            finally:
                store.close()
        if missing and not missing_ok:
            raise UnknownPassageError(f"not in {folder}: {', '.join(repr(m) for m in missing[:5])}"
                                      + (" ..." if len(missing) > 5 else "") + " (nothing was changed)")
        if passage_ids:  # a passage of a document deleted by its id: the document no longer lists it
            from unirag.index.registry import prune_registry

            gone = set(passage_ids) - set(missing)
            if any(i in gone for e in run.docs.values() for i in (e.get("passages") or [])):
                prune_registry(run.registry, gone)
                run.dirty = True
        run.commit(result)
    result.seconds = time.perf_counter() - t0
    return result


def list_documents(index: str | os.PathLike) -> list[dict[str, Any]]:
    """Every document of an index folder's registry: ``id``, ``status``, ``reason``, ``passages``
    (count), ``sha256``, ``format``, ``title``, ``path``, ``size``, ``pages``, ``updated``. An index
    built from passages (no registry) gives an empty list."""
    layout = IndexFolder(index)
    layout.read_manifest()
    reg = load_registry(layout.path)
    if reg is None:
        return []
    rows = []
    for doc_id, e in sorted(reg["documents"].items()):
        rows.append({"id": doc_id, "status": e.get("status", ""), "reason": e.get("reason", ""),
                     "passages": len(e.get("passages") or []), "sha256": e.get("sha256", ""),
                     "format": e.get("format", ""), "title": e.get("title", ""), "path": e.get("path", ""),
                     "size": e.get("size"), "pages": e.get("pages"), "updated": e.get("updated", "")})
    return rows

