"""External vector stores against REAL servers (PostgreSQL + pgvector, Milvus standalone): the
``Index`` verbs give what a FAISS ``Flat`` index gives on the same vectors, and an index folder that
points at a store serves every retriever unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from unirag.corpus import Passage
from unirag.index import Index, IndexFormatError, IndexMismatchError, create_store, export_store, open_index

D = 32


def unit_vectors(n: int, seed: int, d: int = D) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_same_results(got, want, tol: float = 1e-5) -> None:
    """Same rows in the same order and scores within float32 tolerance, ties excepted: rows whose
    scores tie (within ``tol``) may come in either order, and a tie group cut by ``k`` may hold any
    of the tied rows."""
    (gs, gr), (ws, wr) = got, want
    assert gr.shape == wr.shape
    np.testing.assert_allclose(gs, ws, atol=tol, rtol=0)
    for i in range(len(wr)):
        if np.array_equal(gr[i], wr[i]):
            continue
        assert len(set(gr[i].tolist())) == len(gr[i]), f"query {i}: a row returned twice"
        j = 0
        while j < len(wr[i]):  # walk the tie groups of the wanted scores
            end = j + 1
            while end < len(wr[i]) and abs(ws[i, end] - ws[i, j]) <= tol:
                end += 1
            if end < len(wr[i]):  # a group inside the top-k: the same rows, in any order
                assert set(gr[i, j:end].tolist()) == set(wr[i, j:end].tolist()), f"query {i} ranks {j}-{end - 1}"
            j = end


def flat(x: np.ndarray) -> Index:
    index = Index(x.shape[1], "Flat")
    index.add(x)
    return index


def test_search_len_reconstruct_equal_faiss_flat(store_uri):
    x, q = unit_vectors(300, 0), unit_vectors(20, 1)
    with create_store(store_uri, D) as store:
        assert len(store) == 0 and store.dim == D
        store.add(x[:200])
        store.add(x[200:])  # rows continue where the first add stopped
        store.finish_build()
        assert len(store) == 300
        ref = flat(x)
        for k in (1, 10):
            assert_same_results(store.search(q, k), ref.search(q, k))
        # the query vectors themselves are found first, with score 1
        s, r = store.search(x[[5, 250]], 3)
        assert r[:, 0].tolist() == [5, 250] and np.allclose(s[:, 0], 1.0, atol=1e-5)
        rows = np.array([[0, 299, -1], [17, 17, 123]])
        got = store.reconstruct(rows)
        assert got.shape == (2, 3, D)
        np.testing.assert_array_equal(got, ref.reconstruct(rows))  # bit-exact round trip, -1 gives zeros
    with open_index(store_uri) as again:  # connect to what is there
        assert len(again) == 300 and again.dim == D
        assert_same_results(again.search(q, 10), ref.search(q, 10))
        assert again.manifest.extra["store"] == again.uri


def test_remove_keeps_other_rows_and_matches_flat_on_the_rest(store_uri):
    x, q = unit_vectors(200, 3), unit_vectors(10, 4)
    gone = np.array([0, 7, 50, 199])
    with create_store(store_uri, D) as store:
        store.add(x)
        assert store.remove(np.concatenate([gone, [999]])) == 4  # unknown rows are ignored
        assert len(store) == 196
        keep = np.setdiff1d(np.arange(200), gone)
        ws, wr = flat(x[keep]).search(q, 10)
        assert_same_results(store.search(q, 10), (ws, keep[wr]))  # rows are keys: survivors keep theirs
        np.testing.assert_array_equal(store.reconstruct(keep[:3]), x[keep[:3]])
        with pytest.raises(KeyError):
            store.reconstruct(np.array([7]))
        assert store.add(unit_vectors(2, 5)).tolist() == [200, 201]  # after the largest row, not len()
        store.add(unit_vectors(2, 6), rows=np.array([300, 301]))
        store.remove(np.array([301, 201]))
    with open_index(store_uri) as store:  # a new connection finds the next free row again
        assert len(store) == 198
        assert store.add(unit_vectors(1, 7)).tolist() == [301]


def test_dimension_and_existence_errors(store_uri):
    with pytest.raises(IndexFormatError, match="no (table|collection)"):
        open_index(store_uri)
    with create_store(store_uri, D) as store:
        x = unit_vectors(5, 8)
        store.add(x)
        with pytest.raises(IndexMismatchError, match="dimension 16"):
            store.search(np.zeros((1, 16), np.float32), 2)
        s, r = store.search(x[:2], 10)  # k above the count: capped, as FAISS does
        ws, wr = flat(x).search(x[:2], 10)
        assert r.shape == wr.shape == (2, 5)
        assert_same_results((s, r), (ws, wr))
    with pytest.raises(IndexFormatError, match="exists"):
        create_store(store_uri, D)
    with create_store(store_uri, 8, overwrite=True) as store:
        assert len(store) == 0 and store.dim == 8


# --- an index folder backed by a store ---------------------------------------------------------------
class HashEncoder:
    """A deterministic bag-of-words embedding (no model): enough to compare retrievers."""

    name = "hash-bow"
    dim = D

    def encode(self, texts, batch_size=64, sort_by_length=True, bar=None, **_):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        if bar is not None:
            bar.update(len(texts))
        return out

    def info(self):
        return {"kind": "test-hash"}


WORDS = ("river mountain city music science history ocean forest desert planet language bridge "
         "castle engine garden island market poem storm temple tower valley winter").split()


def passages(n: int = 120) -> list[Passage]:
    rng = np.random.default_rng(9)
    return [Passage(f"p{i}", " ".join(rng.choice(WORDS, 8)), title=f"T{i}") for i in range(n)]


@pytest.fixture(scope="module")
def faiss_folder(tmp_path_factory) -> Path:
    from unirag.retrieval.build import build_index

    out = tmp_path_factory.mktemp("faiss") / "idx"
    return build_index(passages(), out, encoder=HashEncoder(), bm25=True, progress=False)


def test_index_folder_on_a_store_serves_the_retrievers(store_uri, faiss_folder, tmp_path):
    from unirag.index import IndexFolder
    from unirag.retrieval import DenseRetriever, load_retriever

    out = export_store(faiss_folder, store_uri, tmp_path / "on-store")
    folder = IndexFolder(out)
    assert not folder.faiss_file.exists() and folder.docs_dir.is_dir() and folder.bm25_dir.is_dir()
    m = folder.read_manifest()
    assert m.extra["store"].split("?")[0] == store_uri.split("?")[0] and m.count == 120
    assert m.encoder == "hash-bow" and folder.has_dense and folder.has_bm25
    enc = HashEncoder()
    queries = ["river city music", "storm over the ocean", "castle tower garden winter"]
    local = DenseRetriever.load(faiss_folder, encoder=enc).search(queries, 5)
    remote = DenseRetriever.load(out, encoder=enc)
    assert type(remote.index).__name__ in ("PgVectorIndex", "MilvusIndex") and len(remote) == 120
    got = remote.search(queries, 5, return_vectors=True)
    assert_same_results((got.scores, got.rows), (local.scores, local.rows))
    for a, b in zip(got.ids, local.ids):
        assert set(a) == set(b)
    np.testing.assert_array_equal(got.vectors, Index.load(faiss_folder).reconstruct(got.rows))
    qv = enc.encode(queries)
    np.testing.assert_allclose(np.einsum("qd,qkd->qk", qv, got.vectors), got.scores, atol=1e-5)  # real scores
    hybrid = load_retriever(out, "hybrid", encoder=enc)
    assert [len(r) for r in hybrid.search(queries, 5).ids] == [5, 5, 5]
    # the store changed behind the folder's back: refused, naming both counts
    with open_index(store_uri) as store:
        store.remove(np.array([0]))
    with pytest.raises(IndexFormatError, match="119 vectors but the folder's manifest lists 120"):
        DenseRetriever.load(out, encoder=enc)


def test_milvus_is_confined_to_loopback(milvus):
    """Milvus listens on every interface: its namespace must hold no interface but its own loopback."""
    pid = milvus.pid
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    with open(f"/proc/{pid}/net/dev") as f:
        interfaces = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    assert interfaces == ["lo"]


def test_pgvector_listens_on_a_unix_socket_only(pg_server):
    from unirag.index.pgvector import PgVectorIndex
    from unirag.index.store import parse_store_uri

    assert "host=/" in pg_server.uri

    conn = PgVectorIndex._connect(parse_store_uri(pg_server.uri + "&table=x"))
    try:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
    finally:
        conn.close()


def test_cli_export_store(store_uri, faiss_folder, tmp_path):
    from unirag.cli.app import main

    dest = tmp_path / "cli-out"
    with pytest.raises(SystemExit) as exc:
        main(["index", "export-store", str(faiss_folder), store_uri, "--out", str(dest), "--json"])
    assert exc.value.code == 0
    with open_index(dest) as store:
        assert len(store) == 120 and store.manifest.encoder == "hash-bow"


@pytest.mark.parametrize("options", ["index=hnsw&m=8&ef_construction=32&ef_search=100", "index=ivfflat&lists=4&probes=4"])
def test_pgvector_ann_index_is_used_and_finds_neighbours(pg_server, options):
    from unirag.index.pgvector import PgVectorIndex

    uri = f"{pg_server.uri}&table=ann_{options.split('&')[0].split('=')[1]}&{options}"
    x, q = unit_vectors(300, 10), unit_vectors(10, 11)
    with create_store(uri, D, overwrite=True) as store:
        assert isinstance(store, PgVectorIndex) and store.index_kind in store.manifest.factory
        store.add(x)
        store.finish_build()
        _, rows = store.search(q, 10)
        _, truth = flat(x).search(q, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)])
        assert recall >= 0.9
        store.conn.execute("SET enable_seqscan = off")  # a tiny table: make the planner show the index path
        from psycopg import sql

        explain = sql.SQL("EXPLAIN ") + store.search_sql(10)
        plan = store.conn.execute(explain, (["[" + ",".join(["0.5"] * D) + "]"],)).fetchall()
        assert "_embedding_idx" in " ".join(r[0] for r in plan)
        store.drop()


def test_milvus_hnsw_index(milvus):
    uri = f"{milvus.uri}/ann_hnsw?index=HNSW&M=8&efConstruction=64&ef=64"
    x, q = unit_vectors(300, 12), unit_vectors(10, 13)
    with create_store(uri, D, overwrite=True) as store:
        assert store.manifest.factory == "milvus:HNSW(M=8,efConstruction=64)"
        store.add(x)
        store.finish_build()
        _, rows = store.search(q, 10)
        _, truth = flat(x).search(q, 10)
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth)]) >= 0.9
        store.drop()
