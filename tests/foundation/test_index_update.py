"""Live index updates: ``update_index`` (add, replace, delete as one atomic new version) and the
door's ``RAG.add_documents`` / ``delete_documents`` over dense, BM25 and hybrid retrievers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import unirag
from tests.conftest import PASSAGES
from tests.tolerance import assert_f32_close, transformer_terms
from unirag.config.errors import UsageError
from unirag.corpus import CorpusError, DocStore, Passage
from unirag.index import Index, IndexFolder, IndexMismatchError
from unirag.models import Encoder
from unirag.retrieval import (BM25Retriever, DenseRetriever, UnknownPassageError, build_index, load_retriever,
                              update_index)

BASE = [Passage(p["id"], p["text"], p["title"], {"topic": p["topic"]}) for p in PASSAGES]
NEW = Passage("p7", "Zanzibar is a spice archipelago off the coast of Tanzania.", "Zanzibar", {"topic": "Places"})
P2_NEW = Passage("p2", "The Eiffel Tower was repainted by a quokka named Gustave.", "Eiffel Tower")
DELETED = "p4"  # Jupiter: "Jupiter is the largest planet in the Solar System, a gas giant."
# bytes of the deleted and replaced texts, raw and as BM25 stores them (lower-cased Snowball stems)
GONE_BYTES = [b"Jupiter", b"jupit", b"gas giant", b"largest planet", b"wrought-iron", b"wrought", b"lattic"]


class Counting:
    """An embedding function that records every text it embeds."""

    def __init__(self, enc):
        self.enc, self.name, self.dim, self.calls = enc, enc.name, enc.dim, []

    def encode(self, texts, **kw):
        self.calls.append(list(texts))
        return self.enc.encode(texts, **kw)

    def encode_queries(self, queries):
        return self.enc.encode(list(queries), batch_size=64)


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return Encoder.from_pretrained(str(tiny_encoder_dir))


def _build(path, encoder, passages=BASE, **kw):
    return build_index(passages, path, encoder=encoder, progress=False, **kw)


def _final(passages=BASE):
    """The passage list after the standard update (p2 replaced in place, p4 gone, p7 appended)."""
    out = [P2_NEW if p.id == "p2" else p for p in passages if p.id != DELETED]
    return out + [NEW]


def _all_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tol_terms(enc, passages):
    c = enc.model.config
    span = max(len(p.contents.split()) for p in passages) * 4
    return transformer_terms(c.hidden_size, c.intermediate_size, c.num_hidden_layers, span) + span + 2 * c.hidden_size


def test_update_adds_replaces_deletes_and_keeps_vectors(tmp_path, encoder):
    ix = _build(tmp_path / "ix", encoder)
    before = Index.load(ix)
    old_rows = {p.id: r for r, p in enumerate(BASE)}
    counting = Counting(encoder)
    res = update_index(ix, counting, add=[P2_NEW, NEW], delete=[DELETED])
    assert (res.added, res.replaced, res.deleted, res.embedded, res.kept, res.passages) == (1, 1, 1, 2, 4, 6)
    # only the new and the changed passage were embedded, in one call
    assert counting.calls == [[P2_NEW.contents, NEW.contents]]
    store = DocStore(IndexFolder(ix).docs_dir)
    assert [p.id for p in store] == [p.id for p in _final()]
    assert store.get("p2").text == P2_NEW.text and store.get("p7").meta == {"topic": "Places"}
    # unchanged passages keep their stored vectors bit for bit
    after = Index.load(ix)
    for row, p in enumerate(store):
        if p.id in ("p1", "p3", "p5", "p6"):
            assert np.array_equal(after.reconstruct(np.array([row])), before.reconstruct(np.array([old_rows[p.id]])))
    m = IndexFolder(ix).verify()
    assert m.count == m.corpus_count == 6 and m.encoder == before.manifest.encoder
    assert m.factory == "Flat" and m.metric == "ip" and m.encoder_info == before.manifest.encoder_info
    # nothing left beside the folder but its (empty) lock file
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ix.lock", "ix"]


def test_searches_see_added_and_replaced_never_deleted(tmp_path, encoder):
    ix = _build(tmp_path / "ix", encoder)
    update_index(ix, encoder, add=[P2_NEW, NEW], delete=[DELETED])
    for kind in ("dense", "bm25", "hybrid"):
        r = load_retriever(ix, kind)
        res = r.search([NEW.contents, P2_NEW.contents], 1)
        assert res.ids == [["p7"], ["p2"]], kind
        everything = r.search([q for p in BASE + [NEW, P2_NEW] for q in (p.contents, p.title)], 6)
        assert all(DELETED not in ids for ids in everything.ids), kind
        assert all(p.id != DELETED for i in range(len(everything)) for p in everything.passages(i))
    bm = BM25Retriever.load(ix)
    assert bm.search(["Zanzibar spice"], 2).ids[0][0] == "p7"
    assert bm.search(["quokka"], 2).ids[0][0] == "p2"
    assert bm.search(["wrought-iron lattice"], 2).ids == [["", ""]]  # the old text of p2 is gone
    assert bm.search(["Jupiter gas giant"], 2).ids == [["", ""]]
    # deleted and replaced text is in no file of the folder (no tombstones)
    for rel, data in _all_bytes(ix).items():
        for needle in GONE_BYTES:
            assert needle not in data and needle.lower() not in data.lower(), (rel, needle)


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF2,Flat"])
def test_update_equals_full_rebuild(tmp_path, encoder, factory):
    ix = _build(tmp_path / "ix", encoder, factory=factory)
    update_index(ix, encoder, add=[P2_NEW, NEW], delete=[DELETED])
    full = _build(tmp_path / "full", encoder, _final(), factory=factory)
    a, b = _all_bytes(ix), _all_bytes(full)
    assert sorted(a) == sorted(b)
    for rel in a:  # the doc store and BM25 are the same bytes
        if rel.startswith(("docs/", "bm25/")):
            assert a[rel] == b[rel], rel
    ma, mb = IndexFolder(ix).verify(), IndexFolder(full).verify()
    assert (ma.corpus_sha256, ma.count, ma.factory, ma.metric, ma.encoder, ma.extra) == \
        (mb.corpus_sha256, mb.count, mb.factory, mb.metric, mb.encoder, mb.extra)
    ia, ib = Index.load(ix), Index.load(full)
    rows = np.arange(len(ib))
    assert_f32_close(ia.reconstruct(rows), ib.reconstruct(rows), _tol_terms(encoder, _final()), magnitude=1.0)
    queries = ["who painted the portrait", "spice islands", "a German composer", "river in Africa", "tower"]
    for kind in ("dense", "bm25", "hybrid"):
        ra, rb = load_retriever(ix, kind), load_retriever(full, kind)
        for r in (ra, rb):
            for part in getattr(r, "retrievers", [r]):
                if "IVF" in factory and hasattr(part, "index"):
                    part.index.set_params(nprobe=2)
        assert ra.search(queries, 4).ids == rb.search(queries, 4).ids, kind


def test_bad_updates_change_nothing(tmp_path, encoder, tiny_encoder_dir_b):
    ix = _build(tmp_path / "ix", encoder)
    before = _all_bytes(ix)
    with pytest.raises(UnknownPassageError, match="'nope'"):
        update_index(ix, encoder, add=[NEW], delete=["p1", "nope"])
    with pytest.raises(IndexMismatchError, match="48-dimensional"):
        update_index(ix, str(tiny_encoder_dir_b), add=[NEW])
    with pytest.raises(CorpusError, match="twice"):
        update_index(ix, encoder, add=[NEW, NEW])
    with pytest.raises(UsageError, match="both added and deleted"):
        update_index(ix, encoder, add=[NEW], delete=["p7"])
    with pytest.raises(UsageError, match="without passages"):
        update_index(ix, encoder, delete=[p.id for p in BASE])
    with pytest.raises(CorpusError, match="'id' and 'text'"):
        update_index(ix, encoder, add=[{"id": "x"}])
    assert _all_bytes(ix) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ix.lock", "ix"]
    # missing_ok: unknown ids are reported, the rest applied
    res = update_index(ix, encoder, delete=["p1", "nope"], missing_ok=True)
    assert res.missing == ["nope"] and res.deleted == 1 and res.passages == 5 and res.embedded == 0


def test_same_contents_and_metadata_only_changes_reuse_vectors(tmp_path, encoder):
    ix = _build(tmp_path / "ix", encoder)
    counting = Counting(encoder)
    p1 = BASE[0]
    res = update_index(ix, counting, add=[Passage(p1.id, p1.text, p1.title, {"topic": "Renaissance"})])
    assert (res.replaced, res.embedded, res.kept) == (1, 0, 6) and counting.calls == []
    assert DocStore(IndexFolder(ix).docs_dir).get("p1").meta == {"topic": "Renaissance"}


@pytest.mark.parametrize("dense,bm25", [(False, True), (True, False)])
def test_bm25_only_and_dense_only_folders(tmp_path, encoder, dense, bm25):
    ix = _build(tmp_path / "ix", encoder, dense=dense, bm25=bm25)
    res = update_index(ix, encoder if dense else None, add=[NEW], delete=[DELETED])
    assert (res.added, res.deleted, res.passages, res.embedded) == (1, 1, 6, 1 if dense else 0)
    m = IndexFolder(ix).verify()
    assert m.count == m.corpus_count == 6
    kind = "dense" if dense else "bm25"
    assert IndexFolder(ix).has_dense == dense and IndexFolder(ix).has_bm25 == bm25
    assert load_retriever(ix, kind).search([NEW.contents], 1).ids == [["p7"]]
    full = _build(tmp_path / "full", encoder, [p for p in BASE if p.id != DELETED] + [NEW], dense=dense, bm25=bm25)
    assert sorted(_all_bytes(ix)) == sorted(_all_bytes(full))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "unirag.cli.app", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_index_update_then_info_verify(tmp_path, encoder, tiny_encoder_dir):
    ix = _build(tmp_path / "ix", encoder)
    corpus = tmp_path / "add.jsonl"
    corpus.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in (P2_NEW, NEW)))
    proc = _cli("index", "update", ix, "--add", corpus, "--delete", DELETED, "--delete", "nope", "--missing-ok",
                "--encoder", tiny_encoder_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert (res["added"], res["replaced"], res["deleted"], res["passages"], res["missing"]) == (1, 1, 1, 6, ["nope"])
    assert [p.id for p in DocStore(IndexFolder(ix).docs_dir)] == [p.id for p in _final()]
    proc = _cli("index", "info", ix, "--verify", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["verified"] is True and info["count"] == 6 and "index.faiss" in info["files"]
    proc = _cli("index", "update", ix, "--delete", "nope")
    assert proc.returncode == 2 and "'nope'" in proc.stderr and "nothing was changed" in proc.stderr


# --- the door ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dense", "bm25", "hybrid"])
def test_door_add_and_delete_documents(tmp_path, encoder, kind):
    ix = _build(tmp_path / "ix", encoder)
    rag = unirag.RAG.load(ix, engine="pipeline", retriever=kind, generator=None, progress=False)
    old_retriever = rag.engine.retriever
    out = rag.add_documents([{"id": "p7", "title": NEW.title, "text": NEW.text, "topic": "Places"}, P2_NEW])
    assert (out["added"], out["replaced"], out["deleted"], out["passages"]) == (1, 1, 0, 7)
    assert out["embedded"] == 2
    assert rag.engine.retriever is not old_retriever and rag.info()["passages"] == 7
    hit = rag.search(NEW.contents, k=1)[0]
    assert hit.id == "p7" and hit.text == NEW.text and hit.meta == {"topic": "Places"}
    assert rag.search(P2_NEW.contents, k=1)[0].text == P2_NEW.text
    # a search already holding the old retriever still works on the old version
    assert old_retriever.search([BASE[3].contents], 7).ids[0][0] == DELETED
    out = rag.delete_documents(DELETED)
    assert (out["deleted"], out["passages"]) == (1, 6)
    assert all(s.id != DELETED for q in ("Jupiter", "largest planet gas giant", BASE[3].contents)
               for s in rag.search(q, k=6))
    with pytest.raises(UnknownPassageError):
        rag.delete_documents(["p4"])
    assert rag.info()["passages"] == 6
    IndexFolder(ix).verify()


def test_door_closed_book_has_no_index_to_update(tiny_llama_dir):
    rag = unirag.RAG.load(engine="closed-book", generator=str(tiny_llama_dir), progress=False)
    with pytest.raises(unirag.config.ConfigError, match="no index"):
        rag.add_documents([NEW])


@pytest.mark.parametrize("kind", ["dense", "hybrid"])
def test_concurrent_reader_sees_whole_versions(tmp_path, encoder, kind):
    ix = _build(tmp_path / "ix", encoder)
    rag = unirag.RAG.load(ix, engine="pipeline", retriever=kind, generator=None, progress=False)
    # the batches: add v1; add v2; delete v1; add v3; delete v2; ... every version has its own id set
    current = {p.id for p in BASE}
    versions, batches = [frozenset(current)], []
    for i in range(1, 6):
        batches.append(("add", f"v{i}"))
        current = current | {f"v{i}"}
        versions.append(frozenset(current))
        if i > 1:
            batches.append(("delete", f"v{i - 1}"))
            current = current - {f"v{i - 1}"}
            versions.append(frozenset(current))
    seen, errors = [], []
    stop = threading.Event()
    queries = ["who painted the portrait", "largest planet", "spice islands", "river"]

    def reader():
        try:
            while not stop.is_set():
                res = rag.engine.search(queries, 20)  # more than any version holds: every passage
                sets = {frozenset(i for i in ids if i) for ids in res.ids}
                texts = {p.id: p.text for q in range(len(queries)) for p in res.passages(q)}
                if len(sets) != 1 or next(iter(sets)) not in versions or set(texts) != next(iter(sets)):
                    errors.append(sets)
                seen.append(next(iter(sets)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for verb, pid in batches:
            if verb == "add":
                rag.add_documents([Passage(pid, f"Passage {pid} about spice islands and rivers.", pid)])
            else:
                rag.delete_documents([pid])
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(set(seen)) >= 2  # the reader saw the index change under it
    assert {p.id for p in DocStore(IndexFolder(ix).docs_dir)} == versions[-1]


def test_a_failure_mid_update_leaves_the_old_version(tmp_path, encoder):
    ix = _build(tmp_path / "ix", encoder)
    before = _all_bytes(ix)

    class Broken(Counting):
        def encode(self, texts, **kw):
            raise RuntimeError("out of memory while embedding")

    with pytest.raises(RuntimeError, match="out of memory"):
        update_index(ix, Broken(encoder), add=[NEW], delete=[DELETED])
    assert _all_bytes(ix) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ix.lock", "ix"]


def test_ivf_without_retraining_keeps_the_old_training(tmp_path, encoder):
    import faiss

    ix = _build(tmp_path / "ix", encoder, factory="IVF2,Flat")
    def centroids(path):
        index = Index.load(path)  # keep it alive while its quantizer is read
        q = faiss.extract_index_ivf(index.faiss_index).quantizer
        return np.stack([q.reconstruct(i) for i in range(q.ntotal)])

    old = centroids(ix)
    res = update_index(ix, encoder, add=[NEW], delete=[DELETED], retrain=False)
    assert res.passages == 6 and np.array_equal(centroids(ix), old)
    r = load_retriever(ix, "dense")
    r.index.set_params(nprobe=2)
    assert r.search([NEW.contents], 1).ids == [["p7"]]
    assert IndexFolder(ix).verify().factory == "IVF2,Flat"
