import hashlib

import numpy as np
import pytest

from tests.tolerance import assert_f32_close, transformer_terms
from unirag.corpus import read_corpus
from unirag.index import IndexMismatchError
from unirag.models import Encoder
from unirag.retrieval import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    build_index,
    load_retriever,
    reciprocal_rank_fusion,
)


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def index_dir(tmp_path, corpus_jsonl, tiny_encoder_dir):
    return build_index(read_corpus(corpus_jsonl), tmp_path / "ix", encoder=str(tiny_encoder_dir), progress=False)


def test_dense_search_matches_brute_force(index_dir, tiny_encoder_dir, corpus_jsonl):
    r = DenseRetriever.load(index_dir)
    enc = Encoder.from_pretrained(str(tiny_encoder_dir))
    docs = list(read_corpus(corpus_jsonl))
    dvec = enc.encode([p.contents for p in docs])
    q = ["who painted the portrait", "largest planet"]
    res = r.search(q, 3, return_vectors=True)
    qvec = enc.encode(q)
    expect = np.argsort(-(qvec @ dvec.T), axis=1)[:, :3]
    assert res.ids == [[docs[j].id for j in row] for row in expect]
    # encoded in other batches when indexed (other padding): the encoder path (mean pooling over the
    # span, normalisation over the width) and, for the scores, a dot product over the width; unit vectors
    c = enc.model.config
    span = max(len(p.contents.split()) for p in docs) * 4
    terms = transformer_terms(c.hidden_size, c.intermediate_size, c.num_hidden_layers, span) + span + 2 * c.hidden_size
    assert_f32_close(res.vectors, dvec[expect], terms, magnitude=1.0)
    assert_f32_close(res.scores, np.einsum("qd,qkd->qk", qvec, dvec[expect]), terms, magnitude=1.0)
    assert res.passages(0)[0].id == res.ids[0][0]


def test_bm25_and_hybrid(index_dir):
    bm = BM25Retriever.load(index_dir)
    res = bm.search(["Leonardo da Vinci painting", "gas giant planet", "qwertyuiop"], 3)
    assert res.ids[0][0] == "p1" and res.ids[1][0] == "p4"
    assert res.ids[2] == ["", "", ""] and (res.rows[2] == -1).all()
    hyb = load_retriever(index_dir, "hybrid")
    assert isinstance(hyb, HybridRetriever)
    h = hyb.search(["Leonardo da Vinci painting"], 6)
    dense = load_retriever(index_dir, "dense").search(["Leonardo da Vinci painting"], 6)
    order, scores = reciprocal_rank_fusion([dense.rows[0].tolist(), bm.search(["Leonardo da Vinci painting"], 6).rows[0].tolist()], 6)
    assert h.rows[0].tolist()[: len(order)] == order
    # the same fusion, stored as float32: exactly the rounded scores
    np.testing.assert_array_equal(h.scores[0][: len(order)], np.asarray(scores, dtype=np.float32))


def test_rrf_math():
    order, scores = reciprocal_rank_fusion([[1, 2, 3], [3, 1, -1]], k=3, c=60)
    assert order == [1, 3, 2]
    np.testing.assert_allclose(scores, [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])


def test_same_build_twice_gives_identical_files(tmp_path, corpus_jsonl, tiny_encoder_dir):
    a = build_index(read_corpus(corpus_jsonl), tmp_path / "a", encoder=str(tiny_encoder_dir), progress=False)
    b = build_index(read_corpus(corpus_jsonl), tmp_path / "b", encoder=str(tiny_encoder_dir), progress=False)
    da, db = _digests(a), _digests(b)
    assert da == db and "index.faiss" in da and "docs/docs.jsonl" in da and any(k.startswith("bm25/") for k in da)


def test_encoder_mismatch_is_refused(index_dir, tiny_encoder_dir_b, tiny_encoder_dir, tmp_path):
    with pytest.raises(IndexMismatchError, match="48-dimensional"):
        DenseRetriever.load(index_dir, encoder=str(tiny_encoder_dir_b))
    # same dimension, different model: caught by the manifest's encoder name
    import shutil

    other = tmp_path / "same-dim-other"
    shutil.copytree(tiny_encoder_dir, other)
    with pytest.raises(IndexMismatchError, match="built with encoder"):
        DenseRetriever.load(index_dir, encoder=str(other))


def test_swap_index(tmp_path, index_dir, tiny_encoder_dir):
    from unirag.corpus import Passage

    new = build_index([Passage("n1", "Saturn has rings."), Passage("n2", "Mars is red.")], tmp_path / "new",
                      encoder=str(tiny_encoder_dir), progress=False, bm25=False)
    r = DenseRetriever.load(index_dir)
    model = r.encoder.model
    r.swap_index(new)
    assert r.encoder.model is model and len(r.store) == 2
    assert set(r.search(["rings"], 2).ids[0]) == {"n1", "n2"}
