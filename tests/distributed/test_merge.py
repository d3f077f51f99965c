"""Without a cluster: the merge of per-shard top-k, ray:// URIs, and shards of a trained (IVF) index,
searched in-process through the very class the Ray actors run."""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.conftest import vector_folder


@pytest.mark.parametrize("uri,want", [
    ("ray:///data/set", (None, "/data/set", {})),
    ("ray://head:10001/data/set?policy=partial&timeout=2", ("ray://head:10001", "/data/set",
                                                           {"policy": "partial", "timeout": "2"})),
    ("ray:/head:10001/data/set", ("ray://head:10001", "/data/set", {})),   # through pathlib.Path
    ("ray:/data/set?num_cpus=0.5", (None, "/data/set", {"num_cpus": "0.5"})),
])
def test_parse_ray_uri(uri, want):
    from unirag.distributed.sharded import parse_ray_uri

    assert parse_ray_uri(uri) == want


def test_merge_orders_pads_and_breaks_ties():
    from unirag.distributed.sharded import merge_topk

    a = (np.array([[0.9, 0.5, 0.1]], np.float32), np.array([[4, 8, 2]]), [["d4", "d8", "d2"]], None)
    b = (np.array([[0.7, 0.5, -np.inf]], np.float32), np.array([[3, 1, -1]]), [["d3", "d1", ""]], None)
    scores, rows, ids, _ = merge_topk([a, b], 4)
    assert rows.tolist() == [[4, 3, 1, 8]] and ids == [["d4", "d3", "d1", "d8"]]  # tie 0.5: lower row first
    assert scores[0].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.5])
    scores, rows, ids, _ = merge_topk([b], 5)  # fewer hits than k: padded
    assert rows.tolist() == [[3, 1, -1, -1, -1]] and ids == [["d3", "d1", "", "", ""]]
    l2 = (np.array([[0.1, 0.4]], np.float32), np.array([[7, 9]]), [["d7", "d9"]], None)
    l2b = (np.array([[0.2, 0.3]], np.float32), np.array([[5, 6]]), [["d5", "d6"]], None)
    assert merge_topk([l2, l2b], 3, metric="l2")[1].tolist() == [[7, 5, 6]]


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_shards_searched_in_process_equal_the_whole(tmp_path, factory):
    from unirag.distributed.sharded import ShardActor, merge_topk
    from unirag.distributed.shards import read_shard_set, split_index
    from unirag.index.vector import Index

    folder, _ = vector_folder(tmp_path / "single", 1500, 8, factory=factory)
    split_index(folder, tmp_path / "set", 3)
    info = read_shard_set(tmp_path / "set")
    shards = [ShardActor(str(tmp_path / "set" / s["name"])) for s in info["shards"]]
    whole = Index.load(folder)
    for idx in [whole] + [s.retriever.index for s in shards]:
        if "IVF" in factory:
            assert idx.faiss_index.is_trained
            idx.set_params(nprobe=8)  # every list: exact, so shards and whole agree
    q = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    want_s, want_r = whole.search(q, 7)
    scores, rows, ids, _ = merge_topk([s.search(q, 7) for s in shards], 7)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
