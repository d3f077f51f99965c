"""``PgVectorIndex``: vectors in a PostgreSQL table with pgvector, behind the ``Index`` verbs.

Table ``(row bigint PRIMARY KEY, embedding vector(d) NOT NULL)``; search orders by ``embedding <#> q``
(pgvector's *negative* inner product), so the score is ``-(embedding <#> q)``. Without an ANN index
PostgreSQL scans the table: results equal FAISS ``Flat`` (ties broken by row). URI options:

* ``table=name`` (default ``unirag_vectors``; ``schema.table`` allowed)
* ``index=flat`` (default, exact) | ``hnsw`` (``m``, ``ef_construction``; search ``ef_search``) |
  ``ivfflat`` (``lists``; search ``probes``), built by :meth:`finish_build` after a bulk load.

Other query parameters go to libpq (``host=/socket/dir``, ``sslmode``, ...). A password is taken from
the URI, ``PGPASSWORD`` or ``~/.pgpass`` and never written to a manifest.
"""

from __future__ import annotations

import struct

import numpy as np

from unirag.index.errors import IndexFormatError
from unirag.index.store import ExternalIndex, StoreURI, missing_client

OPTIONS = ("index", "m", "ef_construction", "lists", "ef_search", "probes")
KINDS = ("flat", "hnsw", "ivfflat")
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise missing_client("pgvector", "psycopg") from None
    return psycopg


def vector_text(v: np.ndarray) -> str:
    """pgvector's text form of a float32 vector (exact: every float32 survives the round trip)."""
    return "[" + ",".join(map(repr, np.asarray(v, dtype=np.float32).tolist())) + "]"


def copy_binary(rows: np.ndarray, x: np.ndarray) -> bytes:
    """``COPY ... FROM STDIN (FORMAT BINARY)`` payload of ``(row bigint, embedding vector)`` tuples."""
    d = x.shape[1]
    rec = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("row", ">i8"), ("l2", ">i4"), ("dim", ">i2"),
                    ("unused", ">i2"), ("vec", ">f4", (d,))])
    buf = np.empty(len(rows), dtype=rec)
    buf["nf"], buf["l1"], buf["row"], buf["l2"], buf["dim"], buf["unused"] = 2, 8, rows, 4 + 4 * d, d, 0
    buf["vec"] = x
    return _HEADER + buf.tobytes() + b"\xff\xff"


class PgVectorIndex(ExternalIndex):
    """A pgvector table behind the ``Index`` verbs; open with :func:`unirag.index.open_index` or
    :func:`unirag.index.store.create_store` and a ``pgvector://`` URI."""

    kind = "pgvector"

    def __init__(self, spec: StoreURI, conn, dim: int):
        kind = spec.options.get("index", "flat").lower()
        if kind not in KINDS:
            raise IndexFormatError(f"{spec.public()}: index={kind!r}: choose from {', '.join(KINDS)}")
        factory = {"flat": "pgvector:flat",
                   "hnsw": f"pgvector:hnsw(m={spec.options.get('m', 16)},"
                           f"ef_construction={spec.options.get('ef_construction', 64)})",
                   "ivfflat": f"pgvector:ivfflat(lists={spec.options.get('lists', 100)})"}[kind]
        super().__init__(spec, dim, factory)
        self.index_kind = kind
        self.conn = conn
        sql = _psycopg().sql
        parts = spec.name.split(".")
        self._table = sql.Identifier(*parts)
        self._index_name = sql.Identifier(parts[-1] + "_embedding_idx")  # created in the table's schema
        self._apply_search_params()

    # --- connecting ----------------------------------------------------------------------------
    @staticmethod
    def _connect(spec: StoreURI):
        psycopg = _psycopg()
        from psycopg.conninfo import make_conninfo

        kw = {"host": spec.host or None, "port": spec.port, "user": spec.user or None,
              "password": spec.password or None, "dbname": spec.database, **spec.params}
        info = make_conninfo("", **{k: v for k, v in kw.items() if v is not None})
        try:
            return psycopg.connect(info, autocommit=True)
        except psycopg.OperationalError as exc:
            raise ConnectionError(f"{spec.public()}: cannot connect to PostgreSQL: {str(exc).strip()}") from None

    @classmethod
    def _dim_of(cls, conn, spec: StoreURI) -> int | None:
        row = conn.execute("SELECT to_regclass(%s)::oid", (spec.name,)).fetchone()
        if row is None or row[0] is None:
            return None
        typ = conn.execute(
            "SELECT format_type(atttypid, atttypmod), atttypmod FROM pg_attribute "
            "WHERE attrelid = %s AND attname = 'embedding' AND NOT attisdropped", (row[0],)).fetchone()
        has_row = conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = 'row' "
                               "AND NOT attisdropped", (row[0],)).fetchone()
        if typ is None or not str(typ[0]).startswith("vector(") or has_row is None:
            raise IndexFormatError(f"{spec.public()}: table {spec.name} is not a vector store "
                                   "(expected columns row bigint, embedding vector(d))")
        return int(typ[1])

    @classmethod
    def connect(cls, spec: StoreURI) -> PgVectorIndex:
        conn = cls._connect(spec)
        try:
            dim = cls._dim_of(conn, spec)
            if dim is None:
                raise IndexFormatError(f"{spec.public()}: no table {spec.name!r} in database {spec.database!r} "
                                       "(fill one with unirag.index.export_store or create_store)")
            store = cls(spec, conn, dim)
        except BaseException:
            conn.close()
            raise
        store.refresh()
        return store

    @classmethod
    def create(cls, spec: StoreURI, dim: int, overwrite: bool = False) -> PgVectorIndex:
        sql = _psycopg().sql
        conn = cls._connect(spec)
        try:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except _psycopg().Error as exc:
                raise IndexFormatError(f"{spec.public()}: the pgvector extension is not available "
                                       f"({str(exc).strip()})") from None
            table = sql.Identifier(*spec.name.split("."))
            if overwrite:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            elif cls._dim_of(conn, spec) is not None:
                raise IndexFormatError(f"{spec.public()}: table {spec.name} exists (drop it or pass overwrite)")
            conn.execute(sql.SQL('CREATE TABLE {} ("row" bigint PRIMARY KEY, embedding vector({}) NOT NULL)')
                         .format(table, sql.Literal(int(dim))))
            conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
                table, sql.Literal(f"unirag vector store: dim={int(dim)}, metric=ip")))
            store = cls(spec, conn, dim)
        except BaseException:
            conn.close()
            raise
        store.refresh()
        return store

    def close(self) -> None:
        self.conn.close()

    # --- the back end's verbs ------------------------------------------------------------------
    def _apply_search_params(self) -> None:
        sql = _psycopg().sql
        self.conn.execute("SET jit = off")  # LLVM compiles a top-k scan per query for no gain
        for opt, guc in (("ef_search", "hnsw.ef_search"), ("probes", "ivfflat.probes")):
            if opt in self.spec.options:
                self.conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(guc),
                                                                sql.Literal(int(self.spec.options[opt]))))

    def set_params(self, **params: float) -> None:
        """``ef_search`` (HNSW) or ``probes`` (IVFFlat), set for this connection."""
        unknown = set(params) - {"ef_search", "probes"}
        if unknown:
            raise ValueError(f"unknown pgvector search parameter(s) {sorted(unknown)} (ef_search, probes)")
        super().set_params(**params)
        self._apply_search_params()

    def _count(self) -> int:
        sql = _psycopg().sql
        return int(self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._table)).fetchone()[0])

    def _next_row(self) -> int:
        sql = _psycopg().sql
        q = sql.SQL('SELECT coalesce(max("row") + 1, 0) FROM {}').format(self._table)
        return int(self.conn.execute(q).fetchone()[0])

    def _insert(self, rows: np.ndarray, x: np.ndarray) -> None:
        sql = _psycopg().sql
        q = sql.SQL('COPY {} ("row", embedding) FROM STDIN (FORMAT BINARY)').format(self._table)
        with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(q) as cp:
            cp.write(copy_binary(rows, x))

    def search_sql(self, k: int):
        """The one statement that searches all queries (a text[] of vectors) at once: a lateral
        top-k per query, which an HNSW / IVFFlat index serves (``ORDER BY embedding <#> q LIMIT k``)."""
        sql = _psycopg().sql
        order = sql.SQL('d, "row"' if self.index_kind == "flat" else "d")  # exact: ties broken by row
        # MATERIALIZED: each query's text is parsed into a vector once, not once per table row
        return sql.SQL(
            "WITH q AS MATERIALIZED (SELECT i, v::vector AS v FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i)) "
            'SELECT q.i, t."row", t.d FROM q CROSS JOIN LATERAL (SELECT "row", embedding <#> q.v AS d FROM {} '
            "ORDER BY {} LIMIT {}) t ORDER BY q.i, t.d, t.\"row\"").format(self._table, order, sql.Literal(int(k)))

    def _search(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        res = self.conn.execute(self.search_sql(k), ([vector_text(v) for v in q],)).fetchall()
        out: list[tuple[list[int], list[float]]] = [([], []) for _ in range(len(q))]
        for i, row, d in res:
            out[i - 1][0].append(row)
            out[i - 1][1].append(-d)
        return [(np.asarray(r, dtype=np.int64), np.asarray(s, dtype=np.float32)) for r, s in out]

    def _fetch(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        sql = _psycopg().sql
        q = sql.SQL('SELECT "row", embedding::text FROM {} WHERE "row" = ANY(%s)').format(self._table)
        got = {}
        for row, text in self.conn.execute(q, (rows.tolist(),)).fetchall():
            got[int(row)] = np.array(text[1:-1].split(","), dtype=np.float32)
        return got

    def _delete(self, rows: np.ndarray) -> None:
        sql = _psycopg().sql
        self.conn.execute(sql.SQL('DELETE FROM {} WHERE "row" = ANY(%s)').format(self._table), (rows.tolist(),))

    def finish_build(self) -> None:
        """Build the HNSW / IVFFlat index the URI asks for (after a bulk load: faster, and IVFFlat
        needs the data to choose its lists), then ``ANALYZE``."""
        sql = _psycopg().sql
        o = self.spec.options
        if self.index_kind == "hnsw":
            self.conn.execute(sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_ip_ops) "
                "WITH (m = {}, ef_construction = {})").format(
                    self._index_name, self._table,
                    sql.Literal(int(o.get("m", 16))), sql.Literal(int(o.get("ef_construction", 64)))))
        elif self.index_kind == "ivfflat":
            self.conn.execute(sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING ivfflat (embedding vector_ip_ops) "
                "WITH (lists = {})").format(self._index_name, self._table,
                                            sql.Literal(int(o.get("lists", 100)))))
        self.conn.execute(sql.SQL("ANALYZE {}").format(self._table))

    def drop(self) -> None:
        sql = _psycopg().sql
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))
        self._n = 0
