"""Queries embedded on ONNX Runtime: the export equals the torch encoder, a retriever opened after
the export searches without importing torch, and the torch encoder still loads when passages must
be embedded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import PASSAGES
from unirag.corpus.passage import Passage

pytest.importorskip("onnxruntime")

QUERIES = ["who wrote it", "a much longer query about the history of the passage, with punctuation!", "x"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("UNIRAG_ONNX", raising=False)
    return tmp_path / "cache"


def test_export_gives_the_torch_vectors(cache, tiny_encoder_dir):
    from unirag.models.encoder import Encoder
    from unirag.models.onnx_query import OnnxQueryEncoder, export, export_dir

    enc = Encoder.from_pretrained(str(tiny_encoder_dir))
    path = export(enc, tiny_encoder_dir)
    assert path == export_dir(tiny_encoder_dir) and path.is_relative_to(cache)
    onnx = OnnxQueryEncoder(path)
    assert (onnx.name, onnx.dim, onnx.info()) == (enc.name, enc.dim, enc.info())
    want = enc.encode(QUERIES, sort_by_length=False)
    got = onnx.encode(QUERIES, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-5)  # float32 rounding of two kernels
    assert not np.allclose(got[0], got[1], atol=1e-3)  # distinct queries, distinct vectors
    ids = [e.ids for e in onnx.tokenizer.encode_batch(QUERIES)]
    assert ids == enc.tokenizer(QUERIES, padding=True)["input_ids"]
    assert export(Encoder.from_pretrained(str(tiny_encoder_dir), dtype="int8"), tiny_encoder_dir) is None


def test_retriever_uses_the_export_once_made(cache, tmp_path, tiny_encoder_dir, monkeypatch):
    from unirag.models.encoder import Encoder
    from unirag.models.onnx_query import OnnxQueryEncoder
    from unirag.retrieval import build_index
    from unirag.retrieval.dense import DenseRetriever

    ix = build_index([Passage(id=p["id"], title=p["title"], text=p["text"]) for p in PASSAGES], tmp_path / "ix", encoder=str(tiny_encoder_dir),
                     bm25=False, progress=False)
    first = DenseRetriever.load(ix)  # torch; exports for the next process
    assert isinstance(first._queries or first.encoder, Encoder)
    second = DenseRetriever.load(ix)
    assert isinstance(second._queries, OnnxQueryEncoder)
    a, b = first.search(QUERIES, 3), second.search(QUERIES, 3)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert isinstance(second.encoder, Encoder)  # loaded on first use, for embedding passages
    assert second.search(QUERIES, 3).ids == a.ids and second.query_encoder is second._queries  # still ONNX
    assert second._queries.token_counts(["who wrote it"]) == [len(second.encoder.tokenizer("who wrote it")["input_ids"])]
    monkeypatch.setenv("UNIRAG_ONNX", "0")
    assert DenseRetriever.load(ix)._queries is None

    code = ("import sys; from unirag.retrieval.dense import DenseRetriever; "
            f"r = DenseRetriever.load({str(ix)!r}); h = r.search([{QUERIES[0]!r}], 3); "
            "print(json.dumps({'ids': h.ids[0], 'torch': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         env={**__import__("os").environ, "UNIRAG_ONNX": "1"}, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"ids": a.ids[0], "torch": False}
