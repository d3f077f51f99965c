"""IndexFolder owns the layout; every part of an index folder is verified when it is loaded."""

from __future__ import annotations

import json
import shutil

import pytest

from unirag.corpus import CorpusError, DocStore, read_corpus
from unirag.index import Index, IndexFolder, IndexFormatError
from unirag.retrieval import BM25Retriever, DenseRetriever, build_index, load_retriever


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_encoder_dir):
    """A dense + BM25 index and a BM25-only index of the shared six passages."""
    from tests.conftest import PASSAGES

    tmp = tmp_path_factory.mktemp("folder")
    corpus = tmp / "c.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    full = build_index(read_corpus(corpus), tmp / "full", encoder=str(tiny_encoder_dir), progress=False)
    sparse = build_index(read_corpus(corpus), tmp / "sparse", dense=False, progress=False)
    return full, sparse


@pytest.fixture
def full(built, tmp_path):
    """A private copy of the dense + BM25 index (tests damage it)."""
    return shutil.copytree(built[0], tmp_path / "full")


def test_layout_and_parts(built):
    full, sparse = built
    f = IndexFolder(full)
    assert f.manifest_file == full / "manifest.json" and f.faiss_file == full / "index.faiss"
    assert f.docs_dir == full / "docs" and f.bm25_dir == full / "bm25"
    assert f.exists() and f.has_dense and f.has_bm25
    listed = set(f.read_manifest().files)
    on_disk = {p.relative_to(full).as_posix() for p in full.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert listed == on_disk and any(r.startswith("bm25/") for r in listed) and "docs/store.json" in listed
    s = IndexFolder(sparse)
    assert s.has_bm25 and not s.has_dense and not s.faiss_file.exists()
    assert not IndexFolder(full.parent / "nothing").exists()


def test_cached_names_a_folder_and_creates_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    assert IndexFolder.cached("wiki-x").path == tmp_path / "cache" / "indexes" / "wiki-x"
    assert not (tmp_path / "cache").exists()
    from unirag.retrieval import default_index_dir

    assert default_index_dir("all-minilm-l6-v2") == tmp_path / "cache" / "indexes" / "wiki-en-all-minilm-l6-v2-flat"
    with pytest.raises(ValueError, match="one plain folder name"):
        IndexFolder.cached("../escape")


@pytest.mark.parametrize("rel", ["docs/offsets.npy", "docs/store.json", "docs/id_rows.npy"])
def test_dense_load_verifies_every_listed_file(full, rel):
    path = full / rel
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(IndexFormatError, match=f"{path}: checksum mismatch"):
        Index.load(full)
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        DenseRetriever.load(full)


def test_bm25_load_verifies_its_files(full):
    target = sorted((full / "bm25").iterdir())[0]
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(IndexFormatError, match=f"{target}: checksum mismatch"):
        BM25Retriever.load(full)
    with pytest.raises(IndexFormatError, match=f"{target}: checksum mismatch"):
        load_retriever(full, "bm25")


def test_bm25_load_verifies_the_doc_store(full):
    docs = full / "docs" / "docs.jsonl"
    docs.write_bytes(docs.read_bytes()[:-20])
    with pytest.raises(IndexFormatError, match=f"{docs}: checksum mismatch"):
        BM25Retriever.load(full)
    # Without verification the doc store still notices the truncation, naming the file.
    with pytest.raises(CorpusError, match=f"{docs}: .* bytes but the store expects"):
        BM25Retriever.load(full, verify=False)


def test_bm25_load_reports_a_missing_listed_file(full):
    (full / "docs" / "id_hash.npy").unlink()
    with pytest.raises(IndexFormatError, match="id_hash.npy: missing"):
        BM25Retriever.load(full)


def test_bm25_only_index(built, monkeypatch):
    _, sparse = built
    res = BM25Retriever.load(sparse).search(["Leonardo da Vinci painting"], 2)
    assert res.ids[0][0] == "p1"
    assert load_retriever(sparse, "bm25").search(["gas giant planet"], 1).ids == [["p4"]]
    from unirag.models.encoder import Encoder

    def no_encoder(*a, **k):
        raise AssertionError("the encoder must not be loaded for a folder without a dense index")

    monkeypatch.setattr(Encoder, "from_pretrained", classmethod(no_encoder))
    for kind in ("dense", "hybrid"):
        with pytest.raises(IndexFormatError, match=f"{sparse}: no dense index in this folder"):
            load_retriever(sparse, kind)
    with pytest.raises(IndexFormatError, match=f"{sparse}: no dense index"):
        DenseRetriever.load(sparse)


def test_no_bm25_part_is_reported_before_loading(tmp_path, corpus_jsonl, tiny_encoder_dir):
    dense_only = build_index(read_corpus(corpus_jsonl), tmp_path / "d", encoder=str(tiny_encoder_dir), bm25=False,
                             progress=False)
    with pytest.raises(IndexFormatError, match=f"{dense_only}: no BM25 index"):
        BM25Retriever.load(dense_only)
    with pytest.raises(IndexFormatError, match="no BM25 index"):
        load_retriever(dense_only, "hybrid")


def test_corrupt_store_json_is_a_corpus_error(full):
    info = full / "docs" / "store.json"
    info.write_text("{not json")
    with pytest.raises(CorpusError, match=f"{info}: corrupted store file"):
        DocStore(full / "docs")
    info.write_text('{"count": "six", "sha256": ""}')
    with pytest.raises(CorpusError, match=f"{info}: corrupted store file"):
        DocStore(full / "docs")


def test_corrupt_store_arrays_are_corpus_errors(full):
    offsets = full / "docs" / "offsets.npy"
    offsets.write_bytes(b"garbage")
    with pytest.raises(CorpusError, match=f"{offsets}: unreadable array"):
        DocStore(full / "docs")


def test_cli_search_on_bm25_only_index(built, monkeypatch, capsys):
    _, sparse = built
    from unirag.cli.app import main
    from unirag.models.encoder import Encoder

    monkeypatch.setattr(Encoder, "from_pretrained",
                        classmethod(lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoder loaded"))))
    with pytest.raises(SystemExit) as info:
        main(["search", "painting", "--index", str(sparse)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"error: {sparse}: no dense index in this folder")
    with pytest.raises(SystemExit) as info:
        main(["search", "Leonardo painting", "--index", str(sparse), "--retriever", "bm25", "--json"])
    assert info.value.code == 0 and json.loads(capsys.readouterr().out)["hits"][0]["id"] == "p1"
