"""A sharded index served by Ray actors: exact merged top-k, balanced shards, failure policies."""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.conftest import vector_folder

N, DIM, K = 2000, 16, 10


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A 2,000-passage Flat folder of random vectors and its 2-shard split."""
    from unirag.distributed.shards import split_index

    tmp = tmp_path_factory.mktemp("shards")
    folder, vecs = vector_folder(tmp / "single", N, DIM)
    split_index(folder, tmp / "set", 2)
    return folder, tmp / "set", vecs


@pytest.fixture(scope="module")
def sharded(ray_session, split):
    from unirag.distributed.sharded import ShardedRetriever

    r = ShardedRetriever(None, split[1], num_cpus=0.25, timeout=30)
    yield r
    r.close()


def _queries(n=40, seed=1):
    q = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_shards_are_balanced_ordinary_folders(split):
    from unirag.corpus.store import DocStore
    from unirag.distributed.shards import balance, read_shard_set, shard_of
    from unirag.index.folder import IndexFolder
    from unirag.index.vector import Index

    folder, shard_set, _ = split
    info = read_shard_set(shard_set)
    assert info["n_shards"] == 2 and info["count"] == N
    assert balance(info) <= 0.05, [s["count"] for s in info["shards"]]
    seen = []
    for i, s in enumerate(info["shards"]):
        sub = IndexFolder(shard_set / s["name"])
        m = sub.verify()  # every file checksummed by its own manifest
        assert Index.load(sub.path).manifest.count == s["count"] == m.corpus_count
        store = DocStore(sub.docs_dir)
        ids = store.ids(range(len(store)))
        assert all(shard_of(pid, 2) == i for pid in ids)
        seen += ids
    whole = DocStore(IndexFolder(folder).docs_dir)
    assert sorted(seen) == sorted(whole.ids(range(N)))


def test_balance_at_larger_scale(tmp_path):
    """20,000 passages over 4 shards: every shard within 5% of the mean."""
    from unirag.distributed.shards import balance, read_shard_set, split_index

    folder, _ = vector_folder(tmp_path / "big", 20_000, 4)
    split_index(folder, tmp_path / "set4", 4)
    assert balance(read_shard_set(tmp_path / "set4")) <= 0.05


def test_sharded_flat_search_is_exact(split, sharded):
    from unirag.index.vector import Index

    folder, _, vecs = split
    index = Index.load(folder)
    q = _queries()
    want_scores, want_rows = index.search(q, K)
    res = sharded.search_vectors(q, K)
    np.testing.assert_array_equal(res.rows, want_rows)
    # scores: equal to float rounding (BLAS sums a 1,000-row block and a 2,000-row block differently)
    np.testing.assert_allclose(res.scores, want_scores, rtol=0, atol=1e-6)
    from unirag.corpus.store import DocStore
    from unirag.index.folder import IndexFolder

    whole = DocStore(IndexFolder(folder).docs_dir)
    assert res.ids == [whole.ids(r) for r in want_rows]
    assert [p.id for p in res.passages(0)] == res.ids[0]
    assert res.coverage == 1.0 and res.missing == ()
    assert len(sharded) == N and len(sharded.store) == N
    pid = res.ids[3][0]
    assert sharded.store.get(pid).id == pid and sharded.store.row_of(pid) == want_rows[3, 0]
    # exclusions and returned vectors, as DenseRetriever does them
    ex = [set(map(int, want_rows[i, :3])) for i in range(len(q))]
    res2 = sharded.search_vectors(q, K, return_vectors=True, exclude=ex)
    s3, r3 = index.search(q, K + 3)
    np.testing.assert_array_equal(res2.rows, r3[:, 3:])
    np.testing.assert_allclose(res2.vectors, vecs[r3[:, 3:]])
    np.testing.assert_allclose(sharded.reconstruct(r3[:2]), vecs[r3[:2]])
    # k larger than the corpus of a shard set
    assert sharded.search_vectors(q[:2], N + 5).rows.shape == (2, N)


def test_bad_uri_options_are_named(split):
    from unirag.config.errors import UsageError
    from unirag.distributed.sharded import ShardedRetriever

    with pytest.raises(UsageError, match="timeout='soon'"):
        ShardedRetriever.open(f"ray://{split[1]}?timeout=soon")
    with pytest.raises(UsageError, match="unknown option 'fast'"):
        ShardedRetriever.open(f"ray://{split[1]}?fast=1")


def test_killed_shard_fail_then_partial_then_restarted(split, ray_session):
    """A dead shard: ``fail`` raises, ``partial`` answers from the others with the right coverage,
    and shard actors started again from the shard folders serve exact results. The actor is killed
    for good (``no_restart``): with Ray's restart racing the next query the check would be a guess."""
    from unirag.distributed.sharded import ShardedRetriever, ShardUnavailableError
    from unirag.index.vector import Index

    ray = ray_session
    folder, shard_dir, _ = split
    index = Index.load(folder)
    q = _queries(8, seed=2)
    want_scores, want_rows = index.search(q, K)
    sharded = ShardedRetriever(None, shard_dir, num_cpus=0.25, timeout=30)
    try:
        victim = sharded.actors[1]
        ray.kill(victim, no_restart=True)
        sharded.policy = "fail"
        with pytest.raises(ShardUnavailableError, match="policy 'fail'"):
            sharded.search_vectors(q, K)

        sharded.policy = "partial"
        res = sharded.search_vectors(q, K)
        assert res.missing == (1,)
        alive = sharded._parts[3]["shards"][0]["count"]
        assert res.coverage == pytest.approx(alive / N) and sharded.last_coverage == res.coverage
        for i in range(len(q)):  # the answer is the true top-k of the shards that answered
            s, r = index.search(q[i:i + 1], N)
            keep = [row for row in r[0] if sharded.store.locate(int(row))[0] == 0][:K]
            assert res.rows[i].tolist() == keep
    finally:
        sharded.close()
    again = ShardedRetriever(None, shard_dir, num_cpus=0.25, timeout=30)  # started from the shard folders
    try:
        res = again.search_vectors(q, K)
        assert res.coverage == 1.0 and res.missing == ()
        np.testing.assert_array_equal(res.rows, want_rows)
        np.testing.assert_allclose(res.scores, want_scores, rtol=0, atol=1e-6)
    finally:
        again.close()


def test_ray_restarts_a_killed_shard_actor_which_serves_again(split, ray_session):
    """A shard actor killed with restarts allowed is started again by Ray from its shard folder
    (``max_restarts``) and the same retriever serves exact results again. What a query sees while
    the restart is under way depends on timing, so the test waits (bounded) for the actor's new process."""
    import time

    from unirag.distributed.sharded import ShardedRetriever
    from unirag.index.vector import Index

    ray = ray_session
    folder, shard_dir, _ = split
    want_scores, want_rows = Index.load(folder).search(_queries(8, seed=3), K)
    q = _queries(8, seed=3)
    sharded = ShardedRetriever(None, shard_dir, num_cpus=0.25, timeout=10, policy="partial")
    try:
        victim = sharded.actors[0]
        pid = ray.get(victim.__ray_call__.remote(lambda self: __import__("os").getpid()))
        ray.kill(victim, no_restart=False)  # asynchronous: the old process may answer a moment longer
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        t0, now = time.monotonic(), pid
        while now == pid:  # until a new process of the same actor answers
            assert time.monotonic() - t0 < 90, "the killed shard actor was not restarted"
            time.sleep(0.2)
            try:
                now = ray.get(victim.__ray_call__.remote(lambda self: __import__("os").getpid()), timeout=5)
            except (ActorUnavailableError, RayActorError, GetTimeoutError):
                pass
        assert sharded.actors[0] is victim  # the same handle: Ray restarted the actor, not the test
        res = sharded.search_vectors(q, K)
        assert res.coverage == 1.0 and res.missing == ()
        np.testing.assert_array_equal(res.rows, want_rows)
        np.testing.assert_allclose(res.scores, want_scores, rtol=0, atol=1e-6)
    finally:
        sharded.close()
