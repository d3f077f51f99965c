"""Live index updates through the classic RAG engine: passages are embedded by the index's
document encoder, and the model's retriever is swapped to the new version."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import unirag
from tests.rag.conftest import make_rag, passages, tiny_encoder
from unirag.corpus import DocStore, Passage
from unirag.index import Index, IndexFolder


def test_rag_engine_add_and_delete_documents(tiny_index, tmp_path):
    from unirag.rag.engine import RagEngine

    folder = shutil.copytree(tiny_index[0], tmp_path / "ix")
    engine = RagEngine(make_rag("causal", folder))
    engine.document_encoder = tiny_encoder()  # the in-memory encoder that built the index
    rag = unirag.RAG(engine)
    n = len(passages())
    new = Passage("Nova", "Oslo is the capital of Greece with a famous fjord", "Nova")
    out = rag.add_documents([new])
    assert (out["added"], out["embedded"], out["passages"]) == (1, 1, n + 1)
    assert rag.info()["passages"] == n + 1 and engine.model.retriever.store.get("Nova").text == new.text
    vec = Index.load(folder).reconstruct(np.array([n]))
    np.testing.assert_allclose(vec, engine.document_encoder.encode([new.contents]), atol=1e-5)
    assert "Nova" in {s.id for s in rag.search("what is the capital of Greece", k=n + 1)}
    out = rag.delete_documents(["Paris"])
    assert (out["deleted"], out["passages"]) == (1, n)
    assert all(s.id != "Paris" for s in rag.search("what is the capital of France", k=n))
    assert "Paris" not in DocStore(IndexFolder(folder).docs_dir)
    for f in folder.rglob("*"):
        if f.is_file():
            assert b"Paris" not in f.read_bytes(), f
    IndexFolder(folder).verify()
