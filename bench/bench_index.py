"""Search through unirag's ``Index`` vs calling FAISS directly on the same index, batch 1 and 64,
and the effect of FAISS's BLAS threshold on batched flat search.

    python bench/bench_index.py [--n 200000] [--dim 384]

Prints a table and writes bench/results/bench_index.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, save, table  # noqa: E402


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors drawn around 1,000 random centres (closer to real embeddings than pure noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    import faiss

    from unirag.index import Index
    from unirag.index import vector as vector_mod

    x = clustered(args.n, args.dim)
    queries = clustered(64, args.dim, seed=1)
    rows = []
    for factory in ("Flat", "HNSW32"):
        idx = Index(args.dim, factory)
        idx.add(x)
        raw = idx.faiss_index  # the very same FAISS object, called directly
        for batch in (1, 64):
            q = queries[:batch]
            faiss.omp_set_num_threads(1 if batch == 1 else 2)
            med = interleaved({
                "faiss": lambda: raw.search(q, 10),
                "unirag": lambda: idx.search(q, 10),
            }, rounds=args.rounds)
            rows.append({"index": factory, "batch": batch, "faiss_ms": med["faiss"] * 1e3,
                         "unirag_ms": med["unirag"] * 1e3,
                         "overhead_%": 100 * (med["unirag"] / med["faiss"] - 1),
                         "unirag_qps": batch / med["unirag"]})
    faiss.omp_set_num_threads(2)
    # BLAS threshold: FAISS default (128000 q x db products... per block) vs unirag's setting
    flat = Index(args.dim, "Flat")
    flat.add(x)
    q = queries[:64]

    def with_threshold(value: int):
        def run():
            faiss.cvar.distance_compute_blas_threshold = value
            flat.faiss_index.search(q, 10)
        return run

    med = interleaved({"default_20": with_threshold(20),
                       "faiss_default_128000": with_threshold(128000)}, rounds=max(3, args.rounds // 2))
    faiss.cvar.distance_compute_blas_threshold = vector_mod.BLAS_THRESHOLD
    blas = {"n": args.n, "batch": 64, "qps_threshold_20": 64 / med["default_20"],
            "qps_threshold_128000": 64 / med["faiss_default_128000"],
            "speedup": med["faiss_default_128000"] / med["default_20"]}
    print(table(rows, f"unirag Index vs FAISS direct, {args.n:,} x {args.dim} clustered unit vectors, top-10, medians of {args.rounds}"))
    print()
    print(table([blas], "Flat search, batch 64: FAISS BLAS threshold (unirag sets 20)"))
    path = save("bench_index", {"args": vars(args), "search": rows, "blas_threshold": blas})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
