"""Live index updates through the OneGen engine: new passages are embedded by the model itself
(its ``OneGenEncoder``), unchanged ones keep their vectors."""

from __future__ import annotations

import shutil

import numpy as np

import unirag
from unirag.corpus import DocStore, Passage
from unirag.index import Index, IndexFolder


def test_onegen_engine_add_and_delete_documents(tiny_onegen, tiny_index_dir, tmp_path, monkeypatch):
    from unirag.onegen.docindex import OneGenEncoder, open_onegen_index
    from unirag.onegen.engine import OneGenEngine

    folder = shutil.copytree(tiny_index_dir, tmp_path / "ix")
    before = Index.load(folder)
    engine = OneGenEngine(tiny_onegen, open_onegen_index(folder, tiny_onegen))
    rag = unirag.RAG(engine)
    calls = []
    encode = OneGenEncoder.encode

    def counting(self, texts, *a, **kw):
        calls.append(list(texts))
        return encode(self, texts, *a, **kw)

    monkeypatch.setattr(OneGenEncoder, "encode", counting)
    new = Passage("zan", "Zanzibar is a spice archipelago off the coast of Tanzania.", "Zanzibar")
    out = rag.add_documents([new])
    assert (out["added"], out["embedded"], out["kept"], out["passages"]) == (1, 1, 10, 11)
    assert calls == [[new.contents]]
    r = engine.retriever
    assert r.index.manifest.encoder == before.manifest.encoder and r.index.manifest.encoder_info["kind"] == "onegen"
    rows = np.arange(10)
    assert np.array_equal(r.index.reconstruct(rows), before.reconstruct(rows))  # kept bit for bit
    qv = r.encoder.encode([new.contents])
    assert r.search_vectors(qv, 1).ids == [["zan"]]
    assert len(rag.search("Where is Zanzibar?", k=11)) == 11
    out = rag.delete_documents(["d3"])  # Jupiter
    assert (out["deleted"], out["passages"]) == (1, 10)
    assert all("d3" not in ids for ids in engine.retriever.search_vectors(before.reconstruct(rows), 10).ids)
    assert "d3" not in DocStore(IndexFolder(folder).docs_dir)
    for f in folder.rglob("*"):
        if f.is_file():
            assert b"Jupiter" not in f.read_bytes(), f
    IndexFolder(folder).verify()
