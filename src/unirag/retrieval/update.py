"""Live updates of an index folder: add, replace and delete passages, written as a new version.

:func:`update_index` writes the complete next version of an index folder beside it and swaps it
in atomically (:func:`unirag.config.fs.atomic_dir`), so the path always holds the whole old
version or the whole new one. Unchanged passages keep their stored vectors (read back with
:meth:`Index.reconstruct`, never re-embedded); only new passages and passages whose contents
changed are embedded. The doc store and BM25 are rebuilt from the new passage list and the
manifest's checksums rewritten, so deleted text is in no file of the new version (no
tombstones). The FAISS factory string, metric and encoder of the manifest are kept.

Row order of the new version: the old rows in order (a replaced passage keeps its row, deleted
ones are dropped), then the new ids in the order given. A full :func:`build_index` of that
passage list gives the same folder (vectors equal to float32 tolerance).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unirag.config.errors import UsageError
from unirag.config.fs import atomic_dir
from unirag.corpus.passage import CorpusError, Passage
from unirag.corpus.store import DocStore
from unirag.index.errors import IndexMismatchError
from unirag.index.folder import IndexFolder
from unirag.index.manifest import Manifest
from unirag.index.vector import Index

__all__ = ["UnknownPassageError", "UpdateResult", "as_passage", "update_index"]


class UnknownPassageError(CorpusError):
    """Ids asked to be deleted that the index does not hold."""


@dataclass
class UpdateResult:
    """What one :func:`update_index` call did.

    ``added``: new ids appended; ``replaced``: existing ids given a new version (in place);
    ``deleted``: ids removed; ``embedded``: passages embedded (new ones and replaced ones whose
    contents changed); ``kept``: vectors reused from the old version; ``passages``: passages in
    the new version; ``missing``: delete ids the index did not hold (only with ``missing_ok``)."""

    folder: Path
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    embedded: int = 0
    kept: int = 0
    passages: int = 0
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts (``folder`` as a string)."""
        d = asdict(self)
        d["folder"] = str(self.folder)
        return d


def as_passage(item: Passage | Mapping[str, Any]) -> Passage:
    """A :class:`Passage`, or a dict with ``id`` and ``text`` (``title`` optional, other keys meta)."""
    if isinstance(item, Passage):
        return item
    if isinstance(item, Mapping):
        if "id" not in item or "text" not in item:
            raise CorpusError(f"a passage needs 'id' and 'text', got keys {sorted(item)}")
        if not isinstance(item["text"], str):
            raise CorpusError(f"passage {item['id']!r}: 'text' must be a string")
        meta = {k: v for k, v in item.items() if k not in ("id", "title", "text")}
        return Passage(id=str(item["id"]), text=item["text"], title=str(item.get("title") or ""), meta=meta)
    raise CorpusError(f"expected a Passage or a dict with 'id' and 'text', got {type(item).__name__}")


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Serialise writers of one index folder, across threads and processes (``flock`` on a lock
    file beside the folder, ``.<name>.lock``; it holds no data)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: threads of this process only
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_versions(folder: Path) -> None:
    """Remove half-written versions (``.<name>.tmp-*`` / ``.<name>.old-*`` beside the folder) left by
    a writer that was killed; call it only while holding :func:`writer_lock`, so none is in use."""
    import shutil

    for prefix in (f".{folder.name}.tmp-", f".{folder.name}.old-"):
        for stale in folder.parent.glob(prefix + "*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)


def _resolve_encoder(manifest: Manifest, encoder: Any, folder: Path) -> Any:
    if encoder is None:
        if manifest.encoder_info.get("kind") == "onegen":
            raise IndexMismatchError(f"{folder} holds a OneGen model's vectors: pass the model's OneGenEncoder "
                                     "(unirag.onegen.docindex) to embed new passages")
        encoder = manifest.encoder
    if isinstance(encoder, str):  # float32: on ONNX Runtime where it can be, as index builds embed
        from unirag.models.onnx_encoder import corpus_encoder

        encoder = corpus_encoder(encoder)
    return encoder


def update_index(
    folder: str | os.PathLike,
    encoder: Any = None,
    add: Iterable[Passage | Mapping[str, Any]] = (),
    delete: Iterable[str] = (),
    *,
    missing_ok: bool = False,
    retrain: bool = True,
    batch_size: int = 64,
    progress: bool = False,
    verify: bool = True,
    registry: dict[str, Any] | None = None,
    lock: bool = True,
) -> UpdateResult:
    """Write the next version of index folder ``folder``: passages of ``add`` replace those with
    the same id (keeping their row) or are appended; ids in ``delete`` are removed.

    ``encoder``: the folder's embedding function (a name, a :class:`~unirag.models.Encoder`, or
    any object with ``name``, ``dim`` and ``encode``, e.g. a OneGen model's ``OneGenEncoder``);
    ``None`` loads the one the manifest names. It must match the manifest's encoder name and
    dimension (:class:`IndexMismatchError`). A BM25-only folder needs none.

    Unknown ``delete`` ids raise :class:`UnknownPassageError` (nothing is written) unless
    ``missing_ok``, which skips them and lists them in ``UpdateResult.missing``. An id both
    added and deleted, a duplicate id in ``add``, or an update that would leave no passage
    raise before anything is written.

    Trained FAISS types (IVF, PQ) are trained again on the new vectors, exactly as a full build
    would (``retrain=False`` keeps the old training: codes of unchanged vectors stay as they
    were, and nothing is learned from the new ones); HNSW re-adds every vector; Flat is exact.
    For lossy codes (PQ, SQ) the kept vectors are the stored, decoded ones.

    Writers of one folder are serialised by a lock file beside it. ``verify`` checks the old
    folder's checksums first. Returns an :class:`UpdateResult`.

    ``registry``: the document registry (``sources.json``, :mod:`unirag.index.registry`) of the new
    version; ``None`` carries the old one over, without the deleted ids. ``lock=False`` is for a
    caller that already holds :func:`writer_lock` of the folder.
    """
    from unirag.retrieval.bm25 import build_bm25
    from unirag.retrieval.build import CHUNK, _faiss_threads, finish_folder
    from unirag.retrieval.dense import check_encoder

    t0 = time.perf_counter()
    path = Path(folder)
    new = [as_passage(p) for p in add]
    if isinstance(delete, str):
        delete = [delete]
    gone = list(dict.fromkeys(str(i) for i in delete))
    seen: dict[str, int] = {}
    for j, p in enumerate(new):
        if p.id in seen:
            raise CorpusError(f"passage id {p.id!r} is given twice in the passages to add")
        seen[p.id] = j
    both = [i for i in gone if i in seen]
    if both:
        raise UsageError(f"ids both added and deleted: {both[:5]}")

    with writer_lock(path) if lock else contextlib.nullcontext():
        remove_stale_versions(path)
        layout = IndexFolder(path)
        manifest = layout.read_manifest()
        if verify:
            layout.verify(manifest)
        dense, bm25 = layout.has_dense, layout.has_bm25
        if dense and manifest.extra.get("store"):
            raise UsageError(f"{path}: its vectors live in the external store {manifest.extra['store']}; "
                             "updating such a folder is not supported yet (rebuild the FAISS folder, update "
                             "it, and export it again with unirag.index.export_store)")
        store = DocStore(layout.docs_dir)
        old_index = enc = None
        try:
            n_old = len(store)
            # --- the plan: for each row of the new version, where its passage and vector come from
            keep = np.ones(n_old, dtype=bool)
            missing: list[str] = []
            for pid in gone:
                row = store.row_of(pid, missing_ok=True)
                if row is None:
                    missing.append(pid)
                else:
                    keep[row] = False
            if missing and not missing_ok:
                raise UnknownPassageError(f"{len(missing)} id(s) to delete are not in {path}: "
                                          f"{', '.join(repr(m) for m in missing[:5])}"
                                          + (" ..." if len(missing) > 5 else "") + " (nothing was changed)")
            new_of_row = np.full(n_old, -1, dtype=np.int64)  # row -> index in ``new`` that replaces it
            appended: list[int] = []
            for j, p in enumerate(new):
                row = store.row_of(p.id, missing_ok=True)
                if row is None:
                    appended.append(j)
                else:
                    new_of_row[row] = j
            kept_rows = np.nonzero(keep)[0]
            # source of each new row: old_row (>= 0: passage/vector of that old row) and new_idx
            # (>= 0: the passage comes from ``new``); a vector is re-embedded where old_row == -1
            old_row = np.concatenate([kept_rows, np.full(len(appended), -1, dtype=np.int64)])
            new_idx = np.concatenate([new_of_row[kept_rows], np.asarray(appended, dtype=np.int64)])
            for r in np.nonzero((new_idx >= 0) & (old_row >= 0))[0]:  # replaced: same contents keep the vector
                if store[int(old_row[r])].contents != new[int(new_idx[r])].contents:
                    old_row[r] = -1
            n = len(old_row)
            if n == 0:
                raise UsageError(f"{path}: the update would leave the index without passages")
            result = UpdateResult(path, added=len(appended), replaced=int((new_of_row >= 0).sum()),
                                  deleted=n_old - len(kept_rows), passages=n, missing=missing)
            if dense:
                enc = _resolve_encoder(manifest, encoder, path)
                old_index = Index.load(path, verify=False)
                check_encoder(old_index, enc)

            def passages() -> Iterator[Passage]:
                for i in range(n):
                    j = int(new_idx[i])
                    yield new[j] if j >= 0 else store[int(old_row[i])]

            with atomic_dir(path) as tmp:
                out = IndexFolder(tmp)
                new_store = DocStore.build(passages(), out.docs_dir)
                if bm25:
                    build_bm25((p.contents for p in new_store), out.bm25_dir)
                index = None
                if dense:
                    index = _fresh_index(old_index, retrain)
                    bar = None
                    todo = int((old_row < 0).sum())
                    if progress and todo:
                        from tqdm.auto import tqdm

                        bar = tqdm(total=todo, desc="embedding new passages", unit=" passages")
                    with _faiss_threads(manifest.factory, True):
                        for start in range(0, n, CHUNK):  # the builder's chunks: IVF trains on the same rows
                            src = old_row[start : start + CHUNK]
                            vecs = np.empty((len(src), old_index.dim), dtype=np.float32)
                            have = src >= 0
                            if have.any():
                                vecs[have] = old_index.reconstruct(src[have])
                            if not have.all():
                                texts = [new[int(j)].contents for j in new_idx[start : start + CHUNK][~have]]
                                vecs[~have] = enc.encode(texts, batch_size=batch_size, sort_by_length=True, bar=bar)
                                result.embedded += len(texts)
                            result.kept += int(have.sum())
                            index.add(vecs)
                    if bar is not None:
                        bar.close()
                    m = index.manifest
                    m.encoder, m.encoder_info = manifest.encoder, dict(manifest.encoder_info)
                else:
                    m = Manifest(dim=0, factory=manifest.factory, metric=manifest.metric, count=n,
                                 encoder=manifest.encoder, encoder_info=dict(manifest.encoder_info))
                from unirag.index.registry import load_registry, prune_registry, write_registry

                reg = registry
                if reg is None:
                    reg = load_registry(path)
                    if reg is not None:
                        reg = prune_registry(reg, set(store.ids(np.nonzero(~keep)[0])))
                if reg is not None:
                    write_registry(tmp, reg)
                finish_folder(tmp, new_store, index, m, dict(manifest.extra))
        finally:
            store.close()
    result.seconds = time.perf_counter() - t0
    return result


def _fresh_index(old: Index, retrain: bool) -> Index:
    """An empty index of the old one's kind: built anew from the factory string, or (``retrain``
    off, for trained kinds) a copy of the old one with its training kept and its vectors dropped."""
    m = old.manifest
    fresh = Index(old.dim, m.factory, m.metric)
    if not retrain and not fresh.faiss_index.is_trained:
        import faiss

        copy = faiss.clone_index(old.faiss_index)
        copy.reset()
        fresh = Index(old.dim, m.factory, m.metric, faiss_index=copy, manifest=Manifest(old.dim, m.factory, m.metric))
    return fresh
