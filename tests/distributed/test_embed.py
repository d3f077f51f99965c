"""Distributed corpus embedding on Ray Data equals the single-process build."""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.conftest import synthetic_passages


def _compare(single, dist):
    from unirag.corpus.store import DocStore
    from unirag.index.folder import IndexFolder
    from unirag.index.vector import Index

    a, b = Index.load(single), Index.load(dist)
    ma, mb = a.manifest.to_dict(), b.manifest.to_dict()
    fa, fb = ma.pop("files"), mb.pop("files")
    assert ma == mb  # dim, count, encoder, encoder_info, corpus checksum, kinds: all equal
    assert set(fa) == set(fb)
    assert {f: h for f, h in fa.items() if f != "index.faiss"} == {f: h for f, h in fb.items() if f != "index.faiss"}
    va, vb = a.reconstruct(np.arange(len(a))), b.reconstruct(np.arange(len(b)))
    np.testing.assert_allclose(va, vb, atol=1e-5)
    sa, sb = DocStore(IndexFolder(single).docs_dir), DocStore(IndexFolder(dist).docs_dir)
    assert sa.ids(range(len(sa))) == sb.ids(range(len(sb)))


def test_ray_build_equals_single_process(ray_session, tiny_encoder_dir, tmp_path):
    """`unirag index build --ray` with a pool of 2 encoder actors writes the single-process folder."""
    import json

    from unirag.cli.app import main
    from unirag.corpus import read_corpus
    from unirag.retrieval.build import build_index

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in synthetic_passages(300)))
    with pytest.raises(SystemExit) as exc:
        main(["index", "build", str(corpus), "--out", str(tmp_path / "ray"), "--encoder", str(tiny_encoder_dir),
              "--ray", "--ray-concurrency", "2", "--ray-cpus", "0.5", "--ray-batch-size", "64", "--json"])
    assert exc.value.code == 0
    single = build_index(read_corpus(corpus), tmp_path / "single", encoder=str(tiny_encoder_dir), progress=False)
    _compare(single, tmp_path / "ray")


def test_pool_larger_than_the_cluster_is_refused(ray_session, tiny_encoder_dir, tmp_path):
    from unirag.config.errors import UsageError
    from unirag.retrieval.build import build_index

    with pytest.raises(UsageError, match="lower concurrency"):
        build_index(synthetic_passages(10), tmp_path / "x", encoder=str(tiny_encoder_dir), progress=False,
                    bm25=False, ray={"concurrency": 2, "num_cpus": 1})
    assert not (tmp_path / "x").exists()
