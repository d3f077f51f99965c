"""External vector stores behind the ``Index`` verbs, selected by a URI.

A store speaks the verbs of :class:`~unirag.index.vector.Index` (``add``, ``search`` -> ``(scores,
rows)`` with ``-1`` padding, ``reconstruct``, ``len``, ``dim``, ``manifest``) plus ``remove(rows)``,
so :class:`~unirag.retrieval.DenseRetriever` and every engine use it unchanged. Back ends:

* ``pgvector://user@host:port/db?table=name`` -- PostgreSQL + pgvector
  (:class:`~unirag.index.pgvector.PgVectorIndex`); the unix-socket form puts the socket folder in
  ``host``: ``pgvector:///db?host=/run/postgresql&table=name``.
* ``milvus://host:port/collection`` -- Milvus (:class:`~unirag.index.milvus.MilvusIndex`).

Both search exactly by default (pgvector without an ANN index, Milvus ``FLAT``), so results equal a
FAISS ``Flat`` index over the same vectors; ``?index=hnsw`` (and the back end's options) trades
exactness for speed. An index folder points at a store by recording the URI in its manifest
(``extra["store"]``, no ``index.faiss``); its doc store stays in the folder, so ``Index.load(folder)``
and everything above it open the store transparently. :func:`export_store` copies a FAISS index
folder's vectors into a store and writes such a folder.

The clients (``psycopg``, ``pymilvus``) are imported only when a store is opened.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from unirag.index.errors import IndexFormatError, IndexMismatchError
from unirag.index.folder import BM25_DIR, DOCS_DIR, IndexFolder
from unirag.index.manifest import Manifest

__all__ = ["SCHEMES", "ExternalIndex", "StoreURI", "VectorIndex", "create_store", "export_store",
           "is_store_uri", "open_index", "open_store", "parse_store_uri"]

SCHEMES = {"pgvector": "pgvector", "postgresql+pgvector": "pgvector", "milvus": "milvus"}
EXTRAS = {"pgvector": "pgvector", "milvus": "milvus"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@runtime_checkable
class VectorIndex(Protocol):
    """The verbs every vector index speaks (FAISS ``Index`` and the external stores)."""

    manifest: Manifest

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]: ...

    def reconstruct(self, rows: np.ndarray) -> np.ndarray: ...


# --- URIs ------------------------------------------------------------------------------------------
@dataclass
class StoreURI:
    """A parsed store URI: back end, server address, container (table / collection), options."""

    kind: str
    user: str = ""
    password: str = field(default="", repr=False)
    host: str = ""
    port: int | None = None
    database: str = ""
    name: str = ""
    options: dict[str, str] = field(default_factory=dict)  # store options (index kind, search params)
    params: dict[str, str] = field(default_factory=dict)   # passed to the client (libpq: host, sslmode, ...)

    def public(self) -> str:
        """The URI without its password (what a manifest records)."""
        from urllib.parse import quote, urlencode

        auth = quote(self.user, safe="") + "@" if self.user else ""
        hostport = self.host if not self.host.startswith("/") else ""
        if self.port is not None and hostport:
            hostport += f":{self.port}"
        if self.kind == "pgvector":
            path = "/" + quote(self.database, safe="")
            query = {**({"host": self.host} if self.host.startswith("/") else {}), **self.params,
                     "table": self.name, **self.options}
        else:
            path = "/" + quote(self.name, safe="")
            query = {**self.params, **self.options}
        q = urlencode(query, safe="/")
        return f"{self.kind}://{auth}{hostport}{path}" + (f"?{q}" if q else "")


def is_store_uri(text: Any) -> bool:
    """Whether ``text`` is a store URI (``pgvector://...``, ``milvus://...``)."""
    return isinstance(text, str) and text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def parse_store_uri(uri: str) -> StoreURI:
    """Parse ``pgvector://user[:password]@host[:port]/db?table=name[&index=hnsw&m=16...]`` or
    ``milvus://[user:password@]host[:port]/collection[?index=HNSW&M=16...]``."""
    if not is_store_uri(uri):
        raise IndexFormatError(f"{uri!r}: not a store URI (expected pgvector://... or milvus://...)")
    parts = urlsplit(uri)
    kind = SCHEMES[parts.scheme.lower()]
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    try:
        port = parts.port
    except ValueError:
        raise IndexFormatError(f"{uri!r}: bad port") from None
    out = StoreURI(kind=kind, user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                   host=unquote(parts.hostname or "") if parts.hostname else "", port=port)
    path = unquote(parts.path.lstrip("/"))
    if kind == "pgvector":
        from unirag.index.pgvector import OPTIONS

        out.database = path
        out.name = query.pop("table", "unirag_vectors")
        if "host" in query:
            out.host = query.pop("host")
        out.options = {k: query.pop(k) for k in list(query) if k in OPTIONS}
        out.params = query
        if not out.database:
            raise IndexFormatError(f"{uri!r}: no database: pgvector://user@host:port/DATABASE?table=name")
    else:
        from unirag.index.milvus import OPTIONS

        out.name = path
        out.options = {k: query.pop(k) for k in list(query) if k in OPTIONS}
        out.params = query
        if not out.name:
            raise IndexFormatError(f"{uri!r}: no collection: milvus://host:port/COLLECTION")
    for part in out.name.split(".") if kind == "pgvector" else [out.name]:
        if not _NAME.match(part):
            raise IndexFormatError(f"{uri!r}: bad table/collection name {out.name!r} "
                                   "(letters, digits and _; a schema as schema.table)")
    return out


def missing_client(kind: str, module: str) -> ImportError:
    """The error raised when a store's client library is not installed."""
    return ImportError(f"the {kind} store needs the '{module}' package: pip install 'unirag[{EXTRAS[kind]}]'")


def _backend(kind: str):
    if kind == "pgvector":
        from unirag.index.pgvector import PgVectorIndex

        return PgVectorIndex
    from unirag.index.milvus import MilvusIndex

    return MilvusIndex


def open_store(uri: str, manifest: Manifest | None = None) -> ExternalIndex:
    """Connect to an existing store (its table / collection must exist).

    ``manifest``: the index folder's manifest when opened through a folder (its encoder and count are
    checked against the store)."""
    spec = parse_store_uri(uri)
    store = _backend(spec.kind).connect(spec)
    if manifest is not None:
        if manifest.dim != store.dim:
            store.close()
            raise IndexFormatError(f"{spec.public()}: holds {store.dim}-dimensional vectors but the folder's "
                                   f"manifest says {manifest.dim}")
        n = len(store)
        if n != manifest.count:
            store.close()
            raise IndexFormatError(f"{spec.public()}: holds {n} vectors but the folder's manifest lists "
                                   f"{manifest.count}; export the folder's vectors again")
        store.manifest = manifest
    return store


def create_store(uri: str, dim: int, metric: str = "ip", overwrite: bool = False) -> ExternalIndex:
    """Create an empty store of dimension ``dim`` (``overwrite`` drops an existing one first)."""
    if metric != "ip":
        raise IndexFormatError(f"metric {metric!r}: the external stores support inner product ('ip') only")
    spec = parse_store_uri(uri)
    return _backend(spec.kind).create(spec, int(dim), overwrite=overwrite)


def open_index(source: str | os.PathLike, verify: bool = True) -> VectorIndex:
    """The declarative way to open a vector index: a store URI (``pgvector://``, ``milvus://``) or an
    index folder (FAISS, or a folder whose manifest points at a store)."""
    if is_store_uri(source):
        return open_store(str(source))
    from unirag.index.vector import Index

    return Index.load(source, verify=verify)


# --- the shared part of the back ends ---------------------------------------------------------------
class ExternalIndex:
    """Base of the external stores: argument checks, padding and the folder format; a back end
    implements ``connect``, ``create``, ``_count``, ``_insert``, ``_search``, ``_fetch``, ``_delete``,
    ``_next_row``, ``drop`` and ``close``."""

    kind = ""
    supports_remove = True

    def __init__(self, spec: StoreURI, dim: int, factory: str):
        self.spec = spec
        self.uri = spec.public()
        self._dim = int(dim)
        self.manifest = Manifest(dim=self._dim, factory=factory, metric="ip", count=0,
                                 extra={"store": self.uri})
        self._next: int | None = None
        self._n = 0  # the number of vectors, counted on connect and kept up to date by add/remove

    # the back end's part
    @classmethod
    def connect(cls, spec: StoreURI) -> ExternalIndex:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def create(cls, spec: StoreURI, dim: int, overwrite: bool = False) -> ExternalIndex:  # pragma: no cover
        raise NotImplementedError

    def _count(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _insert(self, rows: np.ndarray, x: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _search(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:  # pragma: no cover
        raise NotImplementedError

    def _fetch(self, rows: np.ndarray) -> dict[int, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _delete(self, rows: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _next_row(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def drop(self) -> None:  # pragma: no cover - abstract
        """Delete the table / collection and everything in it."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # the verbs
    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def __len__(self) -> int:
        return self._n

    def refresh(self) -> int:
        """Count the vectors again (after writes by another client); returns the count."""
        self._n = self._count()
        self._next = None
        return self._n

    def finish_build(self) -> None:
        """After a bulk load: build the store's ANN index if the URI asks for one, make data durable."""

    def __enter__(self) -> ExternalIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, dim={self.dim})"

    def _check(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise IndexMismatchError(
                f"{what} have dimension {x.shape[-1]} but the store {self.uri} holds {self.dim}-dimensional vectors"
                + (f" from encoder '{self.manifest.encoder}'" if self.manifest.encoder else ""))
        return x

    def add(self, vectors: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Insert vectors; rows default to the next free ones (after the largest row stored).
        Returns the rows used."""
        x = self._check(vectors, "vectors")
        if rows is None:
            if self._next is None:
                self._next = self._next_row()
            rows = np.arange(self._next, self._next + len(x), dtype=np.int64)
        else:
            rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if len(rows) != len(x):
                raise ValueError(f"{len(rows)} rows for {len(x)} vectors")
            if (rows < 0).any():
                raise ValueError("rows must be >= 0")
        if len(x):
            self._insert(rows, x)
            self._n += len(rows)
            if self._next is not None:
                self._next = max(self._next, int(rows.max()) + 1)
        self.manifest.count = self._n
        return rows

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, both ``[n_queries, k]``, best first (larger inner product); missing
        hits have row -1 and score -inf. ``k`` is capped at the number of vectors, as FAISS does."""
        q = self._check(queries, "queries")
        k = int(min(k, self._n or 1))
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        rows = np.full((len(q), k), -1, dtype=np.int64)
        if len(q):
            for i, (r, s) in enumerate(self._search(q, k)):
                rows[i, : len(r)], scores[i, : len(r)] = r[:k], s[:k]
        return scores, rows

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors at ``rows`` (any shape; -1 gives zeros), shape ``rows.shape + (dim,)``."""
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, self.dim), dtype=np.float32)
        want = np.unique(flat[flat >= 0])
        if want.size:
            got = self._fetch(want)
            lost = [int(r) for r in want if int(r) not in got]
            if lost:
                raise KeyError(f"rows not in {self.uri}: {lost[:5]}")
            for i, r in enumerate(flat):
                if r >= 0:
                    out[i] = got[int(r)]
        return out.reshape(*rows.shape, self.dim)

    def remove(self, rows: np.ndarray) -> int:
        """Delete the vectors at ``rows`` (unknown rows are ignored); returns how many are gone.
        Rows are keys: the others keep theirs (unlike FAISS ``remove_ids`` on a flat index)."""
        rows = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        before = self._n
        if rows.size:
            self._delete(rows)
        self._n = self.manifest.count = self._count()
        return before - self._n

    def set_params(self, **params: float) -> None:
        """Search-time parameters of the store's ANN index (see the back end)."""
        self.spec.options.update({k: str(v) for k, v in params.items()})

    # --- folders ---------------------------------------------------------------------------------
    def write_into(self, folder: Path) -> None:
        """Write ``manifest.json`` (pointing at this store, with checksums of every file already in
        ``folder``); the vectors stay in the store. Use inside :func:`unirag.config.atomic_dir`."""
        from unirag.config.fs import sha256_file

        layout = IndexFolder(folder)
        m = self.manifest
        m.files = {p.relative_to(layout.path).as_posix(): sha256_file(p)
                   for p in sorted(layout.path.rglob("*")) if p.is_file() and p != layout.manifest_file}
        m.count, m.dim = self._n, self.dim
        m.extra = {**m.extra, "store": self.uri}
        m.save(layout.manifest_file)

    def save(self, path: str | os.PathLike, docs: str | os.PathLike | None = None) -> Path:
        """Write an index folder that points at this store (atomically); ``docs`` is an optional
        doc-store folder copied in as ``docs/``."""
        from unirag.config.fs import atomic_dir

        with atomic_dir(path) as tmp:
            if docs is not None:
                shutil.copytree(docs, IndexFolder(tmp).docs_dir)
            self.write_into(tmp)
        return Path(path)


def store_of(manifest: Manifest) -> str | None:
    """The store URI an index folder's manifest points at (None for a FAISS folder)."""
    uri = manifest.extra.get("store") if isinstance(manifest.extra, dict) else None
    return uri if isinstance(uri, str) and uri else None


# --- FAISS folder -> store -------------------------------------------------------------------------
def export_store(folder: str | os.PathLike, uri: str, out: str | os.PathLike | None = None,
                 batch: int = 20_000, overwrite: bool = False, verify: bool = True, progress: bool = False) -> Path:
    """Copy the vectors of FAISS index folder ``folder`` into the store at ``uri`` (row = doc-store
    row) and write index folder ``out`` that points at it: same doc store, BM25 index and manifest
    (encoder, corpus), no ``index.faiss``. ``out`` defaults to ``<folder>-<backend>``; the store must
    not exist unless ``overwrite``. Returns ``out``."""
    from unirag.config.fs import atomic_dir
    from unirag.index.vector import Index

    src = IndexFolder(folder)
    index = Index.load(src.path, verify=verify)
    if store_of(index.manifest):
        raise IndexFormatError(f"{src.path} already points at the store {store_of(index.manifest)}")
    spec = parse_store_uri(uri)
    out = Path(out) if out is not None else src.path.with_name(f"{src.path.name}-{spec.kind}")
    if out.resolve() == src.path.resolve():
        raise IndexFormatError("export_store: out must differ from the source folder")
    store = create_store(uri, index.dim, index.manifest.metric, overwrite=overwrite)
    try:
        n = len(index)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"copying vectors to {spec.kind}", unit=" vectors")
        for start in range(0, n, batch):
            rows = np.arange(start, min(start + batch, n), dtype=np.int64)
            store.add(index.reconstruct(rows), rows)
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        store.finish_build()
        src_m = index.manifest
        m = store.manifest
        m.encoder, m.encoder_info = src_m.encoder, dict(src_m.encoder_info)
        m.corpus_sha256, m.corpus_count = src_m.corpus_sha256, src_m.corpus_count
        m.extra = {**src_m.extra, "store": store.uri, "source_factory": src_m.factory}
        with atomic_dir(out) as tmp:
            for part in (DOCS_DIR, BM25_DIR):
                if (src.path / part).is_dir():
                    shutil.copytree(src.path / part, Path(tmp) / part)
            store.write_into(tmp)
    finally:
        store.close()
    return out
