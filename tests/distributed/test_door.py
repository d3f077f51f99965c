"""The door, the pipeline engine and the CLI open a shard set unchanged (a folder or a ray:// URI)."""

from __future__ import annotations

import json

import pytest

from tests.distributed.conftest import synthetic_passages


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_encoder_dir):
    from unirag.distributed.shards import split_index
    from unirag.retrieval.build import build_index

    tmp = tmp_path_factory.mktemp("door")
    single = build_index(synthetic_passages(120, seed=3), tmp / "single", encoder=str(tiny_encoder_dir),
                         bm25=False, progress=False)
    split_index(single, tmp / "set", 2)
    return single, tmp / "set"


def test_pipeline_engine_over_a_shard_set(ray_session, folders):
    from unirag.api import RAG
    from unirag.distributed.sharded import ShardedRetriever

    single, shard_set = folders
    queries = ["river tower number 7", "Topic 4 planet", "ocean forest"]
    want = RAG.load(single, generator=None).search(queries, k=5)
    rag = RAG.load(f"ray://{shard_set.resolve()}?num_cpus=0.25&policy=partial", generator=None)
    try:
        r = rag.engine.retriever
        assert isinstance(r, ShardedRetriever) and r.policy == "partial" and r.n_shards == 2
        from unirag.models.onnx_encoder import OnnxEncoder

        assert isinstance(r.encoder, OnnxEncoder)  # queries on the export the build made, as for one folder
        got = rag.search(queries, k=5)
        assert [[s.id for s in hits] for hits in got] == [[s.id for s in hits] for hits in want]
        assert [[s.title for s in hits] for hits in got] == [[s.title for s in hits] for hits in want]
        for a, b in zip(got, want):
            assert [s.score for s in a] == pytest.approx([s.score for s in b], abs=1e-5)
        assert rag.info()["passages"] == 120
    finally:
        r.close()


def test_cli_search_and_shard(ray_session, folders, tmp_path, capsys):
    from unirag.cli.app import main

    single, _ = folders
    with pytest.raises(SystemExit) as exc:
        main(["index", "shard", str(single), "--out", str(tmp_path / "s3"), "--shards", "3", "--json"])
    assert exc.value.code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_shards"] == 3 and sum(s["count"] for s in info["shards"]) == 120
    with pytest.raises(SystemExit) as exc:
        main(["search", "river tower", "-k", "3", "--index", f"ray://{tmp_path / 's3'}?num_cpus=0.25", "--json"])
    assert exc.value.code == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 3 and all(h["id"].startswith("p") for h in hits)
    import gc

    gc.collect()  # the command's shard actors go with their last handle


def test_dense_retriever_load_opens_a_shard_set(ray_session, folders, tiny_encoder_dir):
    """RAG's model opens its index with DenseRetriever.load: a shard set works there too."""
    import numpy as np

    from unirag.distributed.sharded import ShardedRetriever
    from unirag.retrieval.dense import DenseRetriever

    single, shard_set = folders
    r = DenseRetriever.load(f"ray://{shard_set}?num_cpus=0.25", encoder=str(tiny_encoder_dir))
    try:
        assert isinstance(r, ShardedRetriever)
        want = DenseRetriever.load(single, encoder=r.encoder)
        q = want.embed_queries(["river tower", "planet"])
        a, b = r.search_vectors(q, 4, return_vectors=True), want.search_vectors(q, 4, return_vectors=True)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.vectors, b.vectors)
    finally:
        r.close()


def test_bad_uses_are_clear(ray_session, folders):
    from unirag.config.errors import UsageError
    from unirag.retrieval.loader import load_retriever

    _, shard_set = folders
    with pytest.raises(UsageError, match="dense search only"):
        load_retriever(shard_set, "bm25")
    with pytest.raises(UsageError, match="unknown option"):
        load_retriever(f"ray://{shard_set}?polcy=partial")
    with pytest.raises(UsageError, match="failure policy"):
        load_retriever(f"ray://{shard_set}?policy=maybe&num_cpus=0.25")


def test_onegen_index_sharded(ray_session, tmp_path):
    """A OneGen model's index split into shards: the model's own queries, same ranking."""
    from tests.onegen.helpers import DOCS, make_llama, make_tokenizer
    from unirag.corpus import Passage
    from unirag.distributed.sharded import ShardedRetriever
    from unirag.distributed.shards import split_index
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.docindex import build_onegen_index, open_onegen_index
    from unirag.onegen.model import OneGenModel

    tok = make_tokenizer()
    make_llama(len(tok)).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    model = OneGenModel.from_base(OneGenConfig(base_model=str(tmp_path / "llama"), max_doc_tokens=24))
    passages = [Passage(id=k, title=k, text=v.split(". ", 1)[1]) for k, v in DOCS.items()]
    folder = build_onegen_index(passages, tmp_path / "idx", model, name="onegen:tiny", batch_size=2, progress=False)
    split_index(folder, tmp_path / "set", 2)
    questions = ["Which river flows through Cairo?", "Who directed Alien?"]
    want = open_onegen_index(folder, model).search(questions, 5)
    r = open_onegen_index(f"ray://{tmp_path / 'set'}?num_cpus=0.25", model, model_name="onegen:tiny")
    try:
        assert isinstance(r, ShardedRetriever) and r.index.manifest.encoder == "onegen:tiny"
        assert r.search(questions, 5).ids == want.ids
    finally:
        r.close()
