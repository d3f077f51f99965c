"""``Index``: a FAISS index behind four verbs, saved as a checked, versioned folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from unirag.config.fs import atomic_dir, sha256_file
from unirag.index.errors import IndexFormatError, IndexMismatchError
from unirag.index.folder import DOCS_DIR, IndexFolder
from unirag.index.manifest import Manifest

__all__ = ["BLAS_THRESHOLD", "DOCS_DIR", "Index"]  # DOCS_DIR: kept for older importers; see IndexFolder

# FAISS switches from its own SIMD kernel to BLAS for flat search only at 128,000 query x vector
# products... per query block of 20+ queries BLAS is 7-10x faster (see bench/bench_index.py).
BLAS_THRESHOLD = 20


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the dense index needs faiss: pip install 'unirag[index]'") from exc
    faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
    return faiss


class Index:
    """A vector index of fixed dimension; the kind is a FAISS factory string, e.g. ``"Flat"``,
    ``"HNSW32"``, ``"IVF4096,Flat"``, ``"IVF4096,PQ64"``, ``"SQ8"``; metric ``"ip"`` or ``"l2"``."""

    def __init__(self, dim: int, factory: str = "Flat", metric: str = "ip", *, faiss_index: Any = None,
                 manifest: Manifest | None = None):
        faiss = _faiss()
        if metric not in ("ip", "l2"):
            raise IndexFormatError(f"unknown metric {metric!r} (use 'ip' or 'l2')")
        if faiss_index is None:
            fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
            try:
                faiss_index = faiss.index_factory(int(dim), factory, fmetric)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                raise IndexFormatError(
                    f"unknown or invalid FAISS factory string {factory!r} for dimension {dim} "
                    f"(examples: 'Flat', 'HNSW32', 'IVF4096,Flat', 'IVF1024,PQ64', 'SQ8')"
                ) from None
        self.faiss_index = faiss_index
        self.manifest = manifest or Manifest(dim=int(dim), factory=factory, metric=metric)
        self._dim = int(faiss_index.d)
        self._count = int(faiss_index.ntotal)
        self._swig_ptr = faiss.swig_ptr

    # --- the four verbs ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def __len__(self) -> int:
        return self._count

    def _check(self, x: np.ndarray, what: str) -> np.ndarray:
        if (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == self._dim
                and x.flags.c_contiguous):
            return x  # fast path: nothing to convert or check
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise IndexMismatchError(
                f"{what} have dimension {x.shape[-1]} but the index holds {self.dim}-dimensional vectors"
                + (f" from encoder '{self.manifest.encoder}'" if self.manifest.encoder else "")
            )
        return x

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors (rows get consecutive ids); an untrained index (IVF, PQ) trains on them first."""
        x = self._check(vectors, "vectors")
        if not self.faiss_index.is_trained:
            try:
                self.faiss_index.train(x)
            except RuntimeError as exc:
                raise IndexFormatError(
                    f"cannot train {self.manifest.factory!r} on {len(x)} vectors: {str(exc).strip().splitlines()[-1]}"
                ) from None
        self.faiss_index.add(x)
        self._count = int(self.faiss_index.ntotal)
        self.manifest.count = self._count

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, both ``[n_queries, k]``, best first; missing hits have row -1."""
        q = self._check(queries, "queries")
        k = int(min(k, self._count or 1))
        n = q.shape[0]
        scores = np.empty((n, k), dtype=np.float32)
        rows = np.empty((n, k), dtype=np.int64)
        ptr = self._swig_ptr  # the C++ search itself, without FAISS's Python wrapper checks
        self.faiss_index.search_c(n, ptr(q), k, ptr(scores), ptr(rows), None)
        return scores, rows

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors at ``rows`` (any shape; -1 gives zeros), shape ``rows.shape + (dim,)``."""
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        out = np.zeros((flat.size, self.dim), dtype=np.float32)
        valid = flat >= 0
        if valid.any():
            self._direct_map()
            out[valid] = self.faiss_index.reconstruct_batch(flat[valid])
        return out.reshape(*rows.shape, self.dim)

    def set_params(self, **params: float) -> None:
        """Search-time parameters by FAISS name, e.g. ``efSearch=128`` (HNSW) or ``nprobe=16`` (IVF)."""
        faiss = _faiss()
        space = faiss.ParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(self.faiss_index, name, value)

    def _direct_map(self) -> None:
        faiss = _faiss()
        try:
            ivf = faiss.extract_index_ivf(self.faiss_index)
        except RuntimeError:
            return
        if ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.make_direct_map()

    # --- persistence -------------------------------------------------------------------------
    def write_into(self, folder: Path) -> None:
        """Write ``index.faiss`` and ``manifest.json`` (with checksums of every file already in
        ``folder``) into an existing folder. Use :meth:`save` for an atomic save."""
        faiss = _faiss()
        layout = IndexFolder(folder)
        faiss.write_index(self.faiss_index, str(layout.faiss_file))
        files = {}
        for path in sorted(p for p in layout.path.rglob("*") if p.is_file() and p != layout.manifest_file):
            files[path.relative_to(layout.path).as_posix()] = sha256_file(path)
        self.manifest.files = files
        self.manifest.count = len(self)
        self.manifest.dim = self.dim
        self.manifest.save(layout.manifest_file)

    def save(self, path: str | os.PathLike, docs: str | os.PathLike | None = None) -> Path:
        """Save atomically into folder ``path`` (replacing it only once complete); ``docs`` is an
        optional doc-store folder copied in as ``docs/``."""
        import shutil

        with atomic_dir(path) as tmp:
            if docs is not None:
                shutil.copytree(docs, IndexFolder(tmp).docs_dir)
            self.write_into(tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True, mmap: bool = False) -> Index:
        """Load a folder written by :meth:`save`; ``verify`` checks every file's SHA-256.

        A folder whose manifest points at an external store (``extra["store"]``, see
        :mod:`unirag.index.store`) opens that store instead: the object returned speaks the same verbs."""
        folder = IndexFolder(path)
        manifest = folder.read_manifest()
        folder.require("dense", manifest)
        if verify:
            folder.verify(manifest)
        uri = manifest.extra.get("store") if isinstance(manifest.extra, dict) else None
        if uri:
            from unirag.index.store import open_store

            return open_store(uri, manifest=manifest)  # type: ignore[return-value]
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(folder.faiss_file), flags)
        except RuntimeError as exc:
            raise IndexFormatError(
                f"{folder.faiss_file}: unreadable FAISS file ({str(exc).strip().splitlines()[-1]})"
            ) from None
        if index.d != manifest.dim or index.ntotal != manifest.count:
            raise IndexFormatError(f"{folder.path}: index file does not match its manifest (dim/count)")
        return cls(manifest.dim, manifest.factory, manifest.metric, faiss_index=index, manifest=manifest)
