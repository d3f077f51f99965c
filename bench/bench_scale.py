"""The measurements behind docs/scale.md: memory per vector, build time, single-query search speed
and recall@10 against exact search for the FAISS kinds a 21M-passage index would use, on synthetic
clustered unit vectors of the encoder's dimension (all-MiniLM-L6-v2: 384).

    python bench/bench_scale.py [--sizes 100000,1000000] [--dim 384] [--queries 200]
                                [--factories "Flat;HNSW32;HNSW32_SQ8;IVF{nlist},PQ48"]
                                [--big-factories "Flat;IVF{nlist},PQ48;HNSW32_SQ8;HNSW32"]

``{nlist}`` becomes about 4 * sqrt(n) rounded to a power of two (1024 at 100k, 4096 at 1M); IVF
trains on 40 * nlist sampled vectors (k-means cost grows with sample x nlist). At sizes
above 100k only ``--big-factories`` run (in that order, cheapest first; each result is written as soon
as it is measured, so a run cut short keeps what it finished). Builds use every core FAISS sees;
searches run one query at a time on one thread (the serving case). Wall times and CPU times are both
recorded: on a shared machine the CPU seconds (``build_cpu_s``, ``qps_per_core`` = queries per CPU
second) are the figures that carry over to a dedicated one. Prints a table and writes
bench/results/scale.json (``--report`` prints it as Markdown).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, save, table  # noqa: E402

SEARCH = {"HNSW": [("efSearch", 64), ("efSearch", 128)], "IVF": [("nprobe", 16), ("nprobe", 64)]}


def clustered(n: int, d: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors drawn around 1,000 random centres (as bench_index.py), generated in chunks."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((1000, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = centres[rng.integers(0, 1000, m)] + 0.5 * rng.standard_normal((m, d), dtype=np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def nlist_for(n: int) -> int:
    return 2 ** round(math.log2(4 * math.sqrt(n)))


def index_bytes(index) -> int:
    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path)


def ground_truth(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    faiss.cvar.distance_compute_blas_threshold = 20
    _, rows = flat.search(q, k)
    return rows


def recall_at(rows: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(r[:k]) & set(t[:k])) / k for r, t in zip(rows, truth)]))


def one_at_a_time(index, q: np.ndarray, k: int) -> tuple[np.ndarray, list[float], float]:
    """Rows, wall seconds of each query, and CPU seconds of them all (one thread)."""
    rows = np.empty((len(q), k), dtype=np.int64)
    times = []
    c0 = time.process_time()
    for i in range(len(q)):
        t = time.perf_counter()
        _, r = index.search(q[i : i + 1], k)
        times.append(time.perf_counter() - t)
        rows[i] = r[0]
    return rows, times, time.process_time() - c0


def measure(factory: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray, threads: int) -> list[dict]:
    import faiss

    n, d = x.shape
    faiss.omp_set_num_threads(threads)
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    t0, c0 = time.perf_counter(), time.process_time()
    train_s = train_cpu = 0.0
    if not index.is_trained:
        sample = x[np.random.default_rng(1).choice(n, min(n, 40 * nlist_for(n)), replace=False)]
        index.train(sample)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    for s in range(0, n, 100_000):
        index.add(x[s : s + 100_000])
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    size = index_bytes(index)
    faiss.omp_set_num_threads(1)
    out = []
    kind = "HNSW" if "HNSW" in factory else "IVF" if "IVF" in factory else None
    settings = SEARCH.get(kind, [(None, None)])
    for name, value in settings:
        if name:
            faiss.ParameterSpace().set_index_parameter(index, name, value)
        one_at_a_time(index, q[:10], 10)  # warm-up
        rows, times, cpu = one_at_a_time(index, q, 10)
        times.sort()
        out.append({
            "n": n, "factory": factory, "search": f"{name}={value}" if name else "exact",
            "bytes_per_vector": round(size / n, 1), "index_MiB": round(size / 2**20, 1),
            "train_s": round(train_s, 1), "build_s": round(build_s, 1), "build_threads": threads,
            "train_cpu_s": round(train_cpu, 1), "build_cpu_s": round(build_cpu, 1),
            "qps_1thread": round(len(q) / sum(times), 1), "p50_ms": round(1000 * times[len(times) // 2], 3),
            "cpu_ms_per_query": round(1000 * cpu / len(q), 3), "qps_per_core": round(len(q) / max(cpu, 1e-9), 1),
            "p99_ms": round(1000 * times[min(len(times) - 1, int(len(times) * 0.99))], 3),
            "recall@10": round(recall_at(rows, truth), 4), "load_average": round(os.getloadavg()[0], 1),
        })
    del index
    return out


def markdown(results: list[dict]) -> str:
    """The results as a Markdown table (``--report``: from bench/results/<out>.json, no measuring)."""
    cols = ["n", "factory", "search", "bytes_per_vector", "build_s", "build_cpu_s", "qps_1thread",
            "qps_per_core", "recall@10", "load_average"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{r.get(c, ''):,}" if isinstance(r.get(c), int) else str(r.get(c, '')) for c in cols) + " |"
              for r in results]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="print the saved results as Markdown and exit")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--factories", default="Flat;HNSW32;HNSW32_SQ8;IVF{nlist},PQ48", help="';'-separated")
    ap.add_argument("--big-factories", default="Flat;IVF{nlist},PQ48;HNSW32_SQ8;HNSW32", help="';'-separated")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="FAISS threads for building")
    ap.add_argument("--out", default="scale")
    ap.add_argument("--append", action="store_true", help="keep the results already in the JSON file")
    args = ap.parse_args()

    prior = RESULTS / f"{args.out}.json"
    if args.report:
        print(markdown(json.loads(prior.read_text())["results"]))
        return
    import faiss

    results: list[dict] = json.loads(prior.read_text())["results"] if args.append and prior.exists() else []
    meta = {"dim": args.dim, "queries": args.queries, "faiss": faiss.__version__,
            "load_average_at_start": os.getloadavg()}
    for n in (int(s) for s in args.sizes.split(",")):
        t = time.perf_counter()
        x = clustered(n, args.dim)
        q = clustered(args.queries, args.dim, seed=7)
        truth = ground_truth(x, q, 10)
        print(f"n={n}: data and ground truth in {time.perf_counter() - t:.1f} s", flush=True)
        names = args.factories if n <= 100_000 else args.big_factories
        for spec in names.split(";"):
            factory = spec.strip().replace("{nlist}", str(nlist_for(n)))
            t = time.perf_counter()
            rows = measure(factory, x, q, truth, args.threads)
            results += rows
            print(table(rows, f"{factory} at n={n} ({time.perf_counter() - t:.0f} s, load {os.getloadavg()[0]:.1f})"),
                  flush=True)
            save(args.out, {**meta, "results": results})
        del x
    print(table(results, "all results"))
    print(f"wrote {prior}")


if __name__ == "__main__":
    main()
