"""External stores on a local server: bulk-load rate, ANN index build, and single-query search
latency and recall@10 through the ``Index`` verbs, against FAISS on the same vectors.

    python bench/bench_stores.py [--n 50000] [--dim 384] [--queries 100] [--stores pgvector,milvus]

Starts the servers as the tests do (tests/stores/servers.py: PostgreSQL on a unix socket, Milvus in
a loopback-only network namespace). Prints a table and writes bench/results/stores.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_scale import clustered, recall_at  # noqa: E402
from common import save, table  # noqa: E402

KINDS = {"pgvector": [("flat", ""), ("hnsw", "&index=hnsw&m=16&ef_construction=64&ef_search=64")],
         "milvus": [("FLAT", ""), ("HNSW", "?index=HNSW&M=16&efConstruction=200&ef=64")]}


def run(name: str, uri: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray) -> dict:
    from unirag.index import create_store

    with create_store(uri, x.shape[1], overwrite=True) as store:
        t = time.perf_counter()
        for s in range(0, len(x), 20_000):
            store.add(x[s : s + 20_000], np.arange(s, min(s + 20_000, len(x))))
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        store.finish_build()
        index_s = time.perf_counter() - t
        size = ""
        if name.startswith("pgvector"):  # table + its indexes (heap, TOAST, primary key, HNSW)
            size = round(store.conn.execute("SELECT pg_total_relation_size(to_regclass(%s))",
                                            (store.spec.name,)).fetchone()[0] / len(x), 1)
        for i in range(5):
            store.search(q[i : i + 1], 10)
        times, rows = [], []
        for i in range(len(q)):
            t = time.perf_counter()
            _, r = store.search(q[i : i + 1], 10)
            times.append(time.perf_counter() - t)
            rows.append(r[0])
        store.drop()
    times.sort()
    return {"store": name, "n": len(x), "load_s": round(load_s, 2), "vectors_per_s": round(len(x) / load_s),
            "index_build_s": round(index_s, 2), "bytes_per_vector": size, "p50_ms": round(1000 * times[len(times) // 2], 2),
            "p90_ms": round(1000 * times[int(len(times) * 0.9)], 2),
            "recall@10": round(recall_at(np.array(rows), truth), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--stores", default="pgvector,milvus")
    args = ap.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)

    import faiss

    from tests.stores.servers import milvus_server, pgvector_server
    from unirag.index import Index

    x = clustered(args.n, args.dim)
    q = clustered(args.queries, args.dim, seed=7)
    flat = Index(args.dim, "Flat")
    flat.add(x)
    _, truth = flat.search(q, 10)
    faiss.omp_set_num_threads(1)
    rows = []
    for factory in ("Flat", "HNSW32"):
        idx = Index(args.dim, factory)
        t = time.perf_counter()
        idx.add(x)
        build = time.perf_counter() - t
        if factory != "Flat":
            idx.set_params(efSearch=64)
        times, got = [], []
        for i in range(len(q)):
            t = time.perf_counter()
            got.append(idx.search(q[i : i + 1], 10)[1][0])
            times.append(time.perf_counter() - t)
        times.sort()
        rows.append({"store": f"faiss {factory}", "n": args.n, "load_s": round(build, 2), "vectors_per_s": "",
                     "index_build_s": "", "bytes_per_vector": "", "p50_ms": round(1000 * times[len(times) // 2], 2),
                     "p90_ms": round(1000 * times[int(len(times) * 0.9)], 2),
                     "recall@10": round(recall_at(np.array(got), truth), 4)})
    servers = {"pgvector": pgvector_server, "milvus": milvus_server}
    for kind in args.stores.split(","):
        with servers[kind]() as server:
            for label, opts in KINDS[kind]:
                uri = (f"{server.uri}&table=bench{opts}" if kind == "pgvector" else f"{server.uri}/bench{opts}")
                rows.append(run(f"{kind} {label}", uri, x, q, truth))
                print(table(rows[-1:], rows[-1]["store"]), flush=True)
    print(table(rows, f"stores, n={args.n}, dim={args.dim}, one query at a time (load {os.getloadavg()[0]:.1f})"))
    print("wrote", save("stores", {"n": args.n, "dim": args.dim, "queries": args.queries, "results": rows}))


if __name__ == "__main__":
    main()
