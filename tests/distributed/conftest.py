"""Ray tests: one local Ray session for this folder (2 logical CPUs, no dashboard).

Ray is an optional extra (``pip install 'unirag[ray]'``, part of ``all``); without it the tests that
need a cluster skip, saying so, and those that do not (splitting, merging) still run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

RAY_MISSING = "Ray is not installed: pip install 'unirag[ray]' to run the Ray cluster tests"
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="package")
def ray_session():
    """One local Ray cluster for the tests of this folder (starting one costs 10-20 s on a busy
    machine); its workers import unirag from this checkout."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path  # inherited by the raylet and its workers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def synthetic_passages(n: int, seed: int = 0):
    """``n`` small distinct passages (ids ``p0``...), some with titles and metadata."""
    from unirag.corpus.passage import Passage

    rng = np.random.default_rng(seed)
    words = ["river", "tower", "planet", "composer", "painting", "energy", "mountain", "city", "ocean", "forest"]
    return [Passage(f"p{i}", " ".join(rng.choice(words, 3 + i % 7)) + f" number {i}",
                    title=f"Topic {i % 13}" if i % 3 else "", meta={"n": i} if i % 2 else {})
            for i in range(n)]


def vector_folder(path: Path, n: int, dim: int = 16, seed: int = 0, factory: str = "Flat",
                  encoder: str = "synthetic") -> tuple[Path, np.ndarray]:
    """An index folder of ``n`` synthetic passages with random unit vectors (no model)."""
    from unirag.config.fs import atomic_dir
    from unirag.corpus.store import DocStore
    from unirag.index.folder import IndexFolder
    from unirag.index.vector import Index
    from unirag.retrieval.build import finish_folder

    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with atomic_dir(path) as tmp:
        store = DocStore.build(synthetic_passages(n, seed), IndexFolder(tmp).docs_dir)
        index = Index(dim, factory, "ip")
        index.add(vecs)
        index.manifest.encoder = encoder
        finish_folder(tmp, store, index, index.manifest, {"kinds": ["dense"]})
    return path, vecs
