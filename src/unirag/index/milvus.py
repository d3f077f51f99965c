"""``MilvusIndex``: vectors in a Milvus collection, behind the ``Index`` verbs.

Collection schema: ``row`` (INT64 primary key, the doc-store row) and ``embedding`` (FLOAT_VECTOR, dim
d), metric ``IP``, consistency ``Strong`` (a search sees every finished insert). The default index is
``FLAT`` (exact: results equal FAISS ``Flat``). URI options:

* ``index=FLAT`` (default) | ``HNSW`` (``M``, ``efConstruction``; search ``ef``) | ``IVF_FLAT`` /
  ``IVF_SQ8`` (``nlist``; search ``nprobe``) | ``IVF_PQ`` (``nlist``, ``m``, ``nbits``; ``nprobe``)
* ``consistency=Session`` (default for search and reconstruct: this client's own writes are visible; a
  ``Strong`` read waits for Milvus's next time tick, ~0.2 s) | ``Strong`` | ``Bounded`` | ``Eventually``.
  Counts are always ``Strong``.
* ``db=name`` (a Milvus database), ``secure=true`` (TLS); a ``user:password@`` part becomes the token.
"""

from __future__ import annotations

import numpy as np

from unirag.index.errors import IndexFormatError
from unirag.index.store import ExternalIndex, StoreURI, missing_client

OPTIONS = ("index", "M", "efConstruction", "nlist", "m", "nbits", "ef", "nprobe", "consistency")
CONSISTENCY = ("Strong", "Session", "Bounded", "Eventually")
BUILD = {"FLAT": (), "HNSW": ("M", "efConstruction"), "IVF_FLAT": ("nlist",), "IVF_SQ8": ("nlist",),
         "IVF_PQ": ("nlist", "m", "nbits")}
DEFAULTS = {"M": 16, "efConstruction": 200, "nlist": 1024, "m": 16, "nbits": 8}
SEARCH = ("ef", "nprobe")
CHUNK = 5000    # rows per insert / get message (well under Milvus's 64 MiB gRPC limit at d = 1024)
MAX_TOPK = 16384


def _pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise missing_client("milvus", "pymilvus") from None
    return pymilvus


class MilvusIndex(ExternalIndex):
    """A Milvus collection behind the ``Index`` verbs; open with :func:`unirag.index.open_index` or
    :func:`unirag.index.store.create_store` and a ``milvus://host:port/collection`` URI."""

    kind = "milvus"

    def __init__(self, spec: StoreURI, client, dim: int):
        kind = spec.options.get("index", "FLAT").upper()
        if kind not in BUILD:
            raise IndexFormatError(f"{spec.public()}: index={kind!r}: choose from {', '.join(BUILD)}")
        args = ",".join(f"{p}={spec.options.get(p, DEFAULTS[p])}" for p in BUILD[kind])
        super().__init__(spec, dim, f"milvus:{kind}" + (f"({args})" if args else ""))
        self.index_kind = kind
        self.client = client
        self.name = spec.name
        level = spec.options.get("consistency", "Session").capitalize()
        if level not in CONSISTENCY:
            raise IndexFormatError(f"{spec.public()}: consistency={level!r}: choose from {', '.join(CONSISTENCY)}")
        self.consistency = level

    @staticmethod
    def _client(spec: StoreURI):
        pm = _pymilvus()
        scheme = "https" if spec.params.get("secure", "").lower() in ("1", "true", "yes") else "http"
        kw = {"uri": f"{scheme}://{spec.host or '127.0.0.1'}:{spec.port or 19530}"}
        if spec.user:
            kw["token"] = f"{spec.user}:{spec.password}"
        if spec.params.get("db"):
            kw["db_name"] = spec.params["db"]
        try:
            return pm.MilvusClient(**kw)
        except pm.MilvusException as exc:
            raise ConnectionError(f"{spec.public()}: cannot connect to Milvus: {exc}") from None

    @classmethod
    def _dim_of(cls, client, spec: StoreURI) -> int | None:
        if not client.has_collection(spec.name):
            return None
        desc = client.describe_collection(spec.name)
        fields = {f["name"]: f for f in desc.get("fields", [])}
        pm = _pymilvus()
        row, emb = fields.get("row"), fields.get("embedding")
        if (row is None or not row.get("is_primary") or row.get("type") != pm.DataType.INT64 or emb is None
                or emb.get("type") != pm.DataType.FLOAT_VECTOR):
            raise IndexFormatError(f"{spec.public()}: collection {spec.name} is not a vector store "
                                   "(expected fields row INT64 primary key, embedding FLOAT_VECTOR)")
        return int(emb["params"]["dim"])

    @classmethod
    def connect(cls, spec: StoreURI) -> MilvusIndex:
        client = cls._client(spec)
        try:
            dim = cls._dim_of(client, spec)
            if dim is None:
                raise IndexFormatError(f"{spec.public()}: no collection {spec.name!r} "
                                       "(fill one with unirag.index.export_store or create_store)")
            store = cls(spec, client, dim)
            client.load_collection(spec.name)
        except BaseException:
            client.close()
            raise
        store.refresh()
        return store

    @classmethod
    def create(cls, spec: StoreURI, dim: int, overwrite: bool = False) -> MilvusIndex:
        pm = _pymilvus()
        client = cls._client(spec)
        try:
            if cls._dim_of(client, spec) is not None:
                if not overwrite:
                    raise IndexFormatError(f"{spec.public()}: collection {spec.name} exists "
                                           "(drop it or pass overwrite)")
                client.drop_collection(spec.name)
            store = cls(spec, client, dim)  # checks the options before anything is created
            schema = pm.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                   description=f"unirag vector store: dim={int(dim)}, metric=ip")
            schema.add_field("row", pm.DataType.INT64, is_primary=True)
            schema.add_field("embedding", pm.DataType.FLOAT_VECTOR, dim=int(dim))
            index = client.prepare_index_params()
            params = {p: int(spec.options.get(p, DEFAULTS[p])) for p in BUILD[store.index_kind]}
            index.add_index(field_name="embedding", index_type=store.index_kind, metric_type="IP", params=params)
            client.create_collection(spec.name, schema=schema, index_params=index, consistency_level="Strong")
        except BaseException:
            client.close()
            raise
        store.refresh()
        return store

    def close(self) -> None:
        self.client.close()

    # --- the back end's verbs ------------------------------------------------------------------
    def set_params(self, **params: float) -> None:
        """``ef`` (HNSW) or ``nprobe`` (IVF), used by the following searches."""
        unknown = set(params) - set(SEARCH)
        if unknown:
            raise ValueError(f"unknown Milvus search parameter(s) {sorted(unknown)} ({', '.join(SEARCH)})")
        super().set_params(**params)

    def _count_where(self, expr: str) -> int:
        res = self.client.query(self.name, filter=expr, output_fields=["count(*)"], consistency_level="Strong")
        return int(res[0]["count(*)"])

    def _count(self) -> int:
        return self._count_where("")

    def _next_row(self) -> int:
        # max(row) + 1 by counting (Milvus has no max()): rows are distinct and >= 0, so it is >= count
        lo = self._n
        if self._count_where(f"row >= {lo}") == 0:
            return lo
        hi = max(2 * lo, lo + 1)
        while self._count_where(f"row >= {hi}") > 0:
            lo, hi = hi, 2 * hi
        while hi - lo > 1:  # some row >= lo, none >= hi
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._count_where(f"row >= {mid}") > 0 else (lo, mid)
        return hi

    def _insert(self, rows: np.ndarray, x: np.ndarray) -> None:
        for s in range(0, len(rows), CHUNK):
            data = [{"row": int(r), "embedding": v} for r, v in zip(rows[s : s + CHUNK].tolist(),
                                                                     x[s : s + CHUNK].tolist())]
            self.client.insert(self.name, data)

    def _search(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if k > MAX_TOPK:
            raise ValueError(f"Milvus returns at most {MAX_TOPK} hits per query (k={k})")
        params = {p: int(self.spec.options[p]) for p in SEARCH if p in self.spec.options}
        out = []
        for s in range(0, len(q), MAX_TOPK):
            res = self.client.search(self.name, data=q[s : s + MAX_TOPK].tolist(), limit=k, anns_field="embedding",
                                     search_params={"metric_type": "IP", "params": params},
                                     consistency_level=self.consistency)
            for hits in res:
                out.append((np.fromiter((h["id"] for h in hits), dtype=np.int64, count=len(hits)),
                            np.fromiter((h["distance"] for h in hits), dtype=np.float32, count=len(hits))))
        return out

    def _fetch(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        got = {}
        for s in range(0, len(rows), CHUNK):
            for rec in self.client.get(self.name, ids=rows[s : s + CHUNK].tolist(), output_fields=["embedding"],
                                       consistency_level=self.consistency):
                got[int(rec["row"])] = np.asarray(rec["embedding"], dtype=np.float32)
        return got

    def _delete(self, rows: np.ndarray) -> None:
        for s in range(0, len(rows), CHUNK):
            self.client.delete(self.name, ids=rows[s : s + CHUNK].tolist())

    def finish_build(self, timeout: float = 3600.0) -> None:
        """Seal the inserted segments (``flush``) so Milvus persists them, and wait until its index
        covers every sealed row (``describe_index``: no pending rows)."""
        import time

        self.client.flush(self.name)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            info = self.client.describe_index(self.name, "embedding")
            if int(info.get("pending_index_rows", 0)) == 0 and int(info.get("indexed_rows", 0)) >= int(
                    info.get("total_rows", 0)):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.uri}: the index did not cover every row within {timeout:.0f} s")

    def drop(self) -> None:
        self.client.drop_collection(self.name)
        self._n = 0
