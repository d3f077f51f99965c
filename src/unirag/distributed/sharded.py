"""A sharded index served by Ray actors, behind the retriever verbs of ``DenseRetriever``.

One :class:`ShardActor` per shard folder holds that shard's FAISS index and doc store. A search embeds
the queries here, scatters the query vectors to every shard, and merges the per-shard top-k into the
true top-k (:func:`merge_topk`): with exact (Flat) shards the ids, rows and scores equal those of the
unsplit index. Rows are the source folder's global rows; :class:`ShardedStore` maps them back to
passages through the shard folders, so ``SearchResult.passages(i)`` works as usual.

Failure policy (``policy``): ``fail`` raises :class:`ShardUnavailableError` when a shard does not answer
(dead, restarting, or past ``timeout``); ``partial`` answers from the shards that did and reports
``coverage`` (fraction of passages searched) and ``missing`` (shard numbers) on the result and on the
retriever (``last_coverage``). A dead actor is restarted by Ray from its shard folder
(``max_restarts``) and serves again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from unirag.corpus.passage import Passage
from unirag.distributed.shards import (GLOBAL_ROWS_FILE, LOCAL_BITS, ROUTE_FILE, is_shard_set, read_shard_set,
                                       shard_name, shard_of)
from unirag.retrieval.base import SearchResult

POLICIES = ("fail", "partial")
_LOCAL_MASK = (1 << LOCAL_BITS) - 1


class ShardUnavailableError(RuntimeError):
    """A shard did not answer (policy ``fail``), or none did (policy ``partial``)."""


@dataclass
class ShardedSearchResult(SearchResult):
    """A :class:`SearchResult` with the share of the corpus it covers: ``coverage`` (1.0 when every
    shard answered) and ``missing`` (the shards that did not)."""

    coverage: float = 1.0
    missing: tuple[int, ...] = field(default_factory=tuple)


# --- the shard actor ---------------------------------------------------------------------------
class ShardActor:
    """Holds one shard folder (FAISS index + doc store slice); run as a Ray actor by
    :class:`ShardedRetriever`. Results carry global rows."""

    def __init__(self, folder: str, verify: bool = True):
        from unirag.index.vector import Index
        from unirag.retrieval.dense import DenseRetriever

        self.folder = folder
        self.retriever = DenseRetriever.from_parts(None, Index.load(folder, verify=verify), folder)
        self.global_rows = np.load(Path(folder) / GLOBAL_ROWS_FILE, allow_pickle=False)

    def info(self) -> dict[str, Any]:
        return {"folder": self.folder, "count": len(self.retriever), "pid": os.getpid()}

    def ping(self) -> None:
        """Nothing: a round trip, to measure the cost of calling an actor."""

    def _local(self, rows: Any) -> set[int]:
        g = np.fromiter((int(r) for r in rows), dtype=np.int64)
        pos = np.searchsorted(self.global_rows, g)
        ok = pos < len(self.global_rows)
        ok[ok] = self.global_rows[pos[ok]] == g[ok]
        return set(pos[ok].tolist())

    def search(self, qvecs: np.ndarray, k: int, return_vectors: bool = False,
               exclude: Sequence[set[int]] | None = None):
        """``(scores, global rows, ids, vectors, seconds)`` of this shard's top-``k`` (``seconds``: the
        time spent here, to tell shard time from scatter/gather/merge time)."""
        import time

        t = time.perf_counter()
        local = [self._local(e) for e in exclude] if exclude and any(exclude) else None
        res = self.retriever.search_vectors(qvecs, k, return_vectors, local)
        rows = np.where(res.rows >= 0, self.global_rows[np.maximum(res.rows, 0)], -1)
        return res.scores, rows, res.ids, res.vectors, time.perf_counter() - t

    def reconstruct(self, local_rows: np.ndarray) -> np.ndarray:
        return self.retriever.index.reconstruct(local_rows)


# --- merging -----------------------------------------------------------------------------------
def merge_topk(parts: Sequence[tuple], k: int, metric: str = "ip", width: int | None = None):
    """Merge per-shard ``(scores, rows, ids, vectors, ...)`` into the top-``k`` ``(scores, rows, ids,
    vectors)`` of ``width`` columns (default ``k``); best first (higher inner product or lower L2
    distance), ties by lower global row; missing hits have row -1 and id ``""``."""
    width = k if width is None else width
    scores = np.concatenate([p[0] for p in parts], axis=1)
    rows = np.concatenate([p[1] for p in parts], axis=1)
    key = -scores if metric == "ip" else scores
    key = np.where(rows < 0, np.inf, key)
    order = np.lexsort((rows, key), axis=-1)[:, :width]
    out_scores = np.take_along_axis(scores, order, axis=1)
    out_rows = np.take_along_axis(rows, order, axis=1)
    ids = []
    for i in range(len(rows)):
        flat = [pid for p in parts for pid in p[2][i]]
        ids.append([flat[j] if out_rows[i, c] >= 0 else "" for c, j in enumerate(order[i])])
    vectors = None
    if parts and parts[0][3] is not None:
        allv = np.concatenate([p[3] for p in parts], axis=1)
        vectors = np.take_along_axis(allv, order[:, :, None], axis=1)
    if out_rows.shape[1] < width:  # fewer hits than asked (partial answers): pad
        pad = width - out_rows.shape[1]
        fill = -np.inf if metric == "ip" else np.inf
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=fill)
        out_rows = np.pad(out_rows, ((0, 0), (0, pad)), constant_values=-1)
        ids = [r + [""] * pad for r in ids]
        if vectors is not None:
            vectors = np.pad(vectors, ((0, 0), (0, pad), (0, 0)))
    return out_scores.astype(np.float32, copy=False), out_rows.astype(np.int64, copy=False), ids, vectors


# --- the doc store of a shard set --------------------------------------------------------------
class ShardedStore:
    """Global row -> passage over the shard folders (the ``store`` of a sharded retriever): ``len``,
    ``store[row]``, ``get(id)``, ``row_of(id)``, ``ids(rows)``, ``in``, iteration, ``checksum``.
    The shard-set folder must be readable here (local or a shared filesystem)."""

    def __init__(self, path: str | os.PathLike, info: dict[str, Any] | None = None):
        from unirag.corpus.store import DocStore

        self.path = Path(path)
        self.info = info or read_shard_set(self.path)
        self._route = np.load(self.path / ROUTE_FILE, mmap_mode="r", allow_pickle=False)
        self._n = int(self.info["n_shards"])
        self._stores = [DocStore(self.path / shard_name(s) / "docs") for s in range(self._n)]
        self._global = [np.load(self.path / shard_name(s) / GLOBAL_ROWS_FILE, mmap_mode="r", allow_pickle=False)
                        for s in range(self._n)]

    @property
    def checksum(self) -> str:
        """SHA-256 of the source folder's passages in row order."""
        return self.info["corpus_sha256"]

    def __len__(self) -> int:
        return int(self.info["count"])

    def locate(self, row: int) -> tuple[int, int]:
        """``(shard, row in the shard)`` of global ``row``."""
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for a store of {len(self)} passages")
        v = int(self._route[row])
        return v >> LOCAL_BITS, v & _LOCAL_MASK

    def __getitem__(self, row: int) -> Passage:
        s, local = self.locate(int(row))
        return self._stores[s][local]

    def __iter__(self) -> Iterator[Passage]:
        for row in range(len(self)):
            yield self[row]

    def __contains__(self, pid: object) -> bool:
        return isinstance(pid, str) and self.row_of(pid, missing_ok=True) is not None

    def row_of(self, pid: str, missing_ok: bool = False) -> int | None:
        """Global row of passage ``pid`` (looked up in its shard only)."""
        s = shard_of(pid, self._n)
        local = self._stores[s].row_of(pid, missing_ok=True)
        if local is None:
            if missing_ok:
                return None
            raise KeyError(f"no passage with id {pid!r} in {self.path}")
        return int(self._global[s][local])

    def get(self, pid: str) -> Passage:
        return self[self.row_of(pid)]

    def ids(self, rows) -> list[str]:
        return [self[int(r)].id if r >= 0 else "" for r in rows]

    def close(self) -> None:
        for st in self._stores:
            st.close()


class ShardSetIndex:
    """What a sharded retriever offers in place of ``DenseRetriever.index``: ``manifest``, ``dim``,
    ``len`` and ``reconstruct(global rows)`` (fetched from the shard actors)."""

    def __init__(self, retriever: ShardedRetriever, info: dict[str, Any]):
        from unirag.index.manifest import Manifest

        self._retriever = retriever
        self.manifest = Manifest(dim=info["dim"], factory=info["factory"], metric=info["metric"], count=info["count"],
                                 encoder=info["encoder"], encoder_info=dict(info["encoder_info"]),
                                 corpus_sha256=info["corpus_sha256"], corpus_count=info["count"],
                                 extra={"kinds": ["dense"], "shards": info["n_shards"]})
        self.dim = int(info["dim"])

    def __len__(self) -> int:
        return self.manifest.count

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        return self._retriever.reconstruct(rows)


# --- the retriever -----------------------------------------------------------------------------
def parse_ray_uri(uri: str) -> tuple[str | None, str, dict[str, str]]:
    """``ray://[HOST:PORT]/PATH[?policy=partial&timeout=5]`` -> ``(address or None, path, options)``;
    options: ``policy``, ``timeout``, ``num_cpus`` (per shard actor), ``max_restarts``, ``start_timeout``.

    ``ray:///data/wiki-shards`` opens a shard set on ``$RAY_ADDRESS`` or a new local cluster;
    ``ray://head:10001/data/wiki-shards`` connects to that cluster (Ray client). A path that went
    through ``pathlib`` (``ray:/...``) is understood too: a first segment with a colon is the host."""
    rest = uri[len("ray:"):]
    rest, _, query = rest.partition("?")
    opts = {key: vals[-1] for key, vals in parse_qs(query).items()}
    if rest.startswith("///"):
        return None, rest[2:], opts
    body = rest.lstrip("/")
    head, _, tail = body.partition("/")
    if ":" in head:
        return f"ray://{head}", "/" + tail, opts
    return None, "/" + body, opts


URI_OPTIONS = {"policy": str, "timeout": float, "num_cpus": float, "max_restarts": int, "start_timeout": float}


def is_sharded(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a sharded index: a ``ray:`` URI or a shard-set folder."""
    s = os.fspath(path)
    return s.startswith("ray:") or is_shard_set(s)


class ShardedRetriever:
    """Dense retrieval over a shard set, one Ray actor per shard; the verbs of ``DenseRetriever``
    (``search``, ``search_vectors``, ``embed_queries``, ``store``, ``index``, ``swap_index``, ``len``).

    Open with :meth:`open`. ``policy``: ``fail`` or ``partial`` (see the module). ``timeout``: seconds a
    query waits for the shards (``None``: no limit). ``num_cpus``: per shard actor. ``max_restarts``:
    how often Ray restarts a dead shard actor from its folder (``-1``: always). ``start_timeout``:
    seconds the actors may take to load their shards."""

    def __init__(self, encoder, path: str | os.PathLike, *, policy: str = "fail", timeout: float | None = None,
                 address: str | bool | None = True, verify: bool = True, num_cpus: float = 1.0,
                 max_restarts: int = -1, start_timeout: float = 120.0):
        from unirag.config.errors import UsageError
        from unirag.distributed.cluster import connect, require_ray

        if policy not in POLICIES:
            raise UsageError(f"policy: {policy!r} is not a failure policy (choose from {', '.join(POLICIES)})")
        self.ray = require_ray()
        self.encoder = encoder
        self.policy = policy
        self.timeout = timeout
        self.verify = verify
        self.num_cpus = num_cpus
        self.max_restarts = max_restarts
        self.start_timeout = start_timeout
        self.last_coverage = 1.0
        self.last_missing: tuple[int, ...] = ()
        self.last_shard_seconds: tuple[float | None, ...] = ()  # time each shard spent on the last search
        self._lock = threading.Lock()
        import math

        n = int(read_shard_set(path)["n_shards"])  # a local cluster gets room for every shard actor
        self._started = connect(address, max(os.cpu_count() or 1, math.ceil(n * num_cpus)))
        self._parts = self._open(Path(path))

    def _open(self, path: Path):
        from unirag.index.errors import IndexMismatchError

        info = read_shard_set(path)
        if self.encoder is not None:
            from unirag.models.registry import canonical_name

            if self.encoder.dim != info["dim"]:
                raise IndexMismatchError(f"encoder '{self.encoder.name}' gives {self.encoder.dim}-dimensional vectors "
                                         f"but the shards hold {info['dim']}-dimensional vectors from '{info['encoder']}'")
            if info["encoder"] and canonical_name(info["encoder"]) != canonical_name(self.encoder.name):
                raise IndexMismatchError(f"the shards were built with encoder '{info['encoder']}' but queries come "
                                         f"from '{self.encoder.name}'")
        remote = self.ray.remote(ShardActor).options(num_cpus=self.num_cpus, max_restarts=self.max_restarts,
                                                     max_task_retries=0)
        actors = [remote.remote(str(path.resolve() / s["name"]), self.verify) for s in info["shards"]]
        try:  # constructor errors surface here; too few free CPUs would leave actors pending forever
            self.ray.get([a.info.remote() for a in actors], timeout=self.start_timeout)
        except Exception as exc:
            for a in actors:
                self.ray.kill(a, no_restart=True)
            from ray.exceptions import GetTimeoutError

            if isinstance(exc, GetTimeoutError):
                free = self.ray.available_resources().get("CPU", 0.0)
                raise ShardUnavailableError(
                    f"{path}: {len(actors)} shard actors of {self.num_cpus:g} CPUs did not start within "
                    f"{self.start_timeout:g} s ({free:g} CPUs free); lower num_cpus or add nodes") from None
            raise
        counts = np.array([s["count"] for s in info["shards"]], dtype=np.int64)
        return actors, ShardedStore(path, info), path, info, counts, ShardSetIndex(self, info)

    @classmethod
    def open(cls, path: str | os.PathLike, encoder=None, *, verify: bool = True, **options: Any) -> ShardedRetriever:
        """Open a shard-set folder or a ``ray://`` URI (its ``?policy=&timeout=`` override ``options``);
        the encoder defaults to the one named in ``shards.json`` (queries on its ONNX export when
        one is cached, as for a single index folder)."""
        from unirag.index.errors import IndexMismatchError

        s = os.fspath(path)
        if s.startswith("ray:"):
            address, s, opts = parse_ray_uri(s)
            options.setdefault("address", address or True)
            from unirag.config.errors import UsageError

            for key, value in opts.items():
                if key not in URI_OPTIONS:
                    raise UsageError(f"{path}: unknown option {key!r} (known: {', '.join(URI_OPTIONS)})")
                try:
                    options[key] = URI_OPTIONS[key](value)
                except ValueError as exc:
                    raise UsageError(f"{path}: option {key}={value!r}: {exc}") from None
        info = read_shard_set(s)
        if encoder is None:
            if info["encoder_info"].get("kind") == "onegen":
                raise IndexMismatchError(f"{s} holds a OneGen model's vectors: open it with the onegen engine")
            encoder = info["encoder"]
        if isinstance(encoder, str):  # queries on ONNX Runtime where it is exported, as single folders do
            from unirag.models.onnx_encoder import query_encoder

            encoder = query_encoder(encoder)
        return cls(encoder, s, verify=verify, **options)

    # --- the retriever verbs -------------------------------------------------------------------
    @property
    def actors(self) -> list:
        """The shard actors, in shard order."""
        return self._parts[0]

    @property
    def store(self) -> ShardedStore:
        return self._parts[1]

    @property
    def path(self) -> Path:
        return self._parts[2]

    @property
    def index(self) -> ShardSetIndex:
        return self._parts[5]

    @property
    def n_shards(self) -> int:
        return len(self._parts[0])

    def __len__(self) -> int:
        return int(self._parts[3]["count"])

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        fn = getattr(self.encoder, "encode_queries", None)
        return fn(list(queries)) if fn is not None else self.encoder.encode(list(queries), batch_size=64)

    def search(self, queries: list[str], k: int = 10, return_vectors: bool = False) -> ShardedSearchResult:
        return self.search_vectors(self.embed_queries(queries), k, return_vectors)

    def _gather(self, refs: list) -> list:
        """Per-shard answers (``None`` for a shard that did not answer, under ``partial``)."""
        ray = self.ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        down = (RayActorError, ActorUnavailableError)
        if self.policy == "fail":
            try:
                return ray.get(refs, timeout=self.timeout)
            except (*down, GetTimeoutError) as exc:
                # Free hung shards only. A dead shard's peers finish on their own, and cancelling a
                # healthy actor's queued task can hold its next tasks back (Ray waits up to 30 s for
                # the cancelled sequence number: ray-project/ray#50814, #60850)
                if isinstance(exc, GetTimeoutError):
                    _, late = ray.wait(refs, num_returns=len(refs), timeout=0)
                    for r in late:
                        ray.cancel(r)
                raise ShardUnavailableError(f"a shard of {self.path} did not answer ({type(exc).__name__}); "
                                            f"policy 'fail' (use policy 'partial' to answer from the rest)") from exc
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.timeout)
        ready_set = set(ready)
        out = []
        for r in refs:
            if r not in ready_set:
                ray.cancel(r)
                out.append(None)
                continue
            try:
                out.append(ray.get(r))
            except down:
                out.append(None)
        return out

    def search_vectors(self, qvecs: np.ndarray, k: int = 10, return_vectors: bool = False,
                       exclude: Sequence[set[int]] | None = None) -> ShardedSearchResult:
        """Scatter ``qvecs`` ``[n, dim]`` to every shard, merge their top-``k``; rows are global rows
        (``exclude[i]``: global rows query ``i`` must not return)."""
        actors, store, _, info, counts, _ = self._parts
        qvecs = np.ascontiguousarray(qvecs, dtype=np.float32)
        ex = [set(int(r) for r in e) for e in exclude] if exclude and any(exclude) else None
        refs = [a.search.remote(qvecs, k, return_vectors, ex) for a in actors]
        outs = self._gather(refs)
        missing = tuple(i for i, o in enumerate(outs) if o is None)
        parts = [o for o in outs if o is not None]
        if not parts:
            raise ShardUnavailableError(f"no shard of {self.path} answered")
        covered = int(counts.sum() - counts[list(missing)].sum()) if missing else int(counts.sum())
        width = k if ex else min(k, max(int(counts.sum()), 1))
        self.last_shard_seconds = tuple(o[4] if o is not None else None for o in outs)
        scores, rows, ids, vectors = merge_topk(parts, k, info["metric"], width)
        coverage = covered / max(int(counts.sum()), 1)
        self.last_coverage, self.last_missing = coverage, missing
        return ShardedSearchResult(ids=ids, scores=scores, rows=rows, vectors=vectors, store=store,
                                   coverage=coverage, missing=missing)

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of global ``rows`` (any shape; -1 gives zeros), from the shard actors."""
        actors, store, _, info, _, _ = self._parts
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, int(info["dim"])), dtype=np.float32)
        where: dict[int, list[tuple[int, int]]] = {}
        for i, r in enumerate(flat):
            if r >= 0:
                s, local = store.locate(int(r))
                where.setdefault(s, []).append((i, local))
        refs = {s: actors[s].reconstruct.remote(np.array([lo for _, lo in v], dtype=np.int64))
                for s, v in where.items()}
        for s, ref in refs.items():
            vecs = self.ray.get(ref, timeout=self.timeout)
            out[[i for i, _ in where[s]]] = vecs
        return out.reshape(*rows.shape, out.shape[1])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every shard actor answers (e.g. after a restart)."""
        import time

        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        deadline = time.monotonic() + timeout
        for a in self.actors:
            while True:
                try:
                    self.ray.get(a.info.remote(), timeout=max(0.1, deadline - time.monotonic()))
                    break
                except (RayActorError, ActorUnavailableError, GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise ShardUnavailableError(f"a shard of {self.path} is still down after {timeout} s") from None
                    time.sleep(0.2)

    def swap_index(self, path: str | os.PathLike, verify: bool = True) -> None:
        """Serve another shard set (same encoder): new actors start, then replace the old ones in one
        assignment; the old actors are stopped."""
        with self._lock:
            self.verify = verify
            new = self._open(Path(path))
            old, self._parts = self._parts, new
        self._stop(old)

    def _stop(self, parts) -> None:
        for a in parts[0]:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        parts[1].close()

    def close(self) -> None:
        """Stop the shard actors (and the local cluster if this retriever started it)."""
        from unirag.distributed.cluster import disconnect

        self._stop(self._parts)
        disconnect(self._started)
        self._started = False


def open_sharded(path: str | os.PathLike, encoder=None, verify: bool = True, **options: Any) -> ShardedRetriever:
    """:meth:`ShardedRetriever.open` (the hook behind ``load_retriever`` and ``--index ray://...``)."""
    return ShardedRetriever.open(path, encoder, verify=verify, **options)
