"""Ray: sharded search overhead over the slowest shard, and Ray Data embedding throughput.

    python bench/bench_ray.py [--n 100000] [--dim 384] [--shards 2] [--passages 2000]

1. Sharded search: a Flat index of ``--n`` clustered random vectors split into ``--shards`` shard
   actors; for batches of 1 and 32 queries (k=10): p50 of the whole sharded search, of the slowest
   shard's own search (timed inside its actor), of the merge alone (``merge_topk``), the difference
   (scatter + gather + merge), and of empty calls to every shard actor (Ray's own round trip),
   against the unsplit index searched in this process, and (actor calls only) of the slowest shard's
   search called alone through Ray with the other shards idle (its round trip included); scattered
   by ordinary actor calls (what ShardedRetriever does) and, for comparison, through a Ray
   Compiled Graph built here.
2. Embedding: the first ``--passages`` Wikipedia summaries embedded with all-MiniLM-L6-v2 by the
   single-process build (torch's default threads, and 1 thread as each actor runs) and by
   ``build_index(ray=...)`` with 1 and 2 encoder actors (1 CPU each) on
   a local cluster; passages per second with and without start-up (loading the model in this
   process; starting the actor pool, each actor importing torch and loading the encoder).

Prints tables and writes bench/results/ray.json (with the load average: the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def vector_folder(path: Path, vecs: np.ndarray) -> Path:
    from unirag.config.fs import atomic_dir
    from unirag.corpus.passage import Passage
    from unirag.corpus.store import DocStore
    from unirag.index.folder import IndexFolder
    from unirag.index.vector import Index
    from unirag.retrieval.build import finish_folder

    with atomic_dir(path) as tmp:
        store = DocStore.build((Passage(f"p{i}", f"passage {i}") for i in range(len(vecs))), IndexFolder(tmp).docs_dir)
        index = Index(vecs.shape[1], "Flat", "ip")
        index.add(vecs)
        index.manifest.encoder = "synthetic"
        finish_folder(tmp, store, index, index.manifest, {"kinds": ["dense"]})
    return path


def p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3


def compiled_scatter(r):
    """A Ray Compiled Graph over the retriever's shard actors: ``(qvecs, k, return_vectors, exclude)``
    to every shard over shared-memory channels (measured here, not used by ShardedRetriever: its
    actors busy-wait, and a dead shard's teardown can stall the others; see docs/distributed.md)."""
    from ray.dag import InputNode, MultiOutputNode

    with InputNode() as inp:
        dag = MultiOutputNode([a.search.bind(inp[0], inp[1], inp[2], inp[3]) for a in r.actors])
    return dag.experimental_compile()


def idle_cpu(ray, actors, seconds: float = 2.0) -> float:
    """Cores the shard actors use together while no query comes (busy-waiting shows here)."""
    import psutil

    procs = [psutil.Process(info["pid"]) for info in ray.get([a.info.remote() for a in actors])]
    before = [sum(p.cpu_times()[:2]) for p in procs]
    time.sleep(seconds)
    return round(sum(sum(p.cpu_times()[:2]) - b for p, b in zip(procs, before)) / seconds, 2)


def bench_search(args, tmp: Path) -> list[dict]:
    import ray

    from unirag.distributed.sharded import ShardedRetriever, merge_topk
    from unirag.distributed.shards import split_index
    from unirag.index.vector import Index

    t = time.perf_counter()
    folder = vector_folder(tmp / "single", clustered(args.n, args.dim))
    split_index(folder, tmp / "set", args.shards)
    print(f"index + split of {args.n} vectors: {time.perf_counter() - t:.1f} s", flush=True)
    ray.init(num_cpus=args.shards, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    single = Index.load(folder)
    queries = clustered(256, args.dim, seed=1)
    rows = []
    try:
        for scatter in ("calls", "compiled"):
            r = ShardedRetriever(None, tmp / "set", num_cpus=1)
            graph = compiled_scatter(r) if scatter == "compiled" else None
            try:
                for batch in (1, 32):
                    total, slowest, merge, local, noop, alone = [], [], [], [], [], []
                    for i in range(args.rounds):
                        q = queries[(i * batch) % 200:(i * batch) % 200 + batch]
                        t = time.perf_counter()
                        if graph is None:
                            r.search_vectors(q, 10)
                            shard_s = r.last_shard_seconds
                        else:  # what search_vectors does, with the graph as the transport
                            parts = ray.get(graph.execute(q, 10, False, None))
                            merge_topk(parts, 10)
                            shard_s = [p[4] for p in parts]
                        total.append(time.perf_counter() - t)
                        slowest.append(max(shard_s))
                        parts = [a.search.remote(q, 10) for a in r.actors]
                        parts = ray.get(parts)
                        t = time.perf_counter()
                        merge_topk(parts, 10)
                        merge.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        single.search(q, 10)
                        local.append(time.perf_counter() - t)
                        t = time.perf_counter()
                        ray.get([a.ping.remote() for a in r.actors])
                        noop.append(time.perf_counter() - t)
                        if graph is None:  # each shard's search called alone (the others idle), round trip
                            calls = []
                            for a in r.actors:
                                t = time.perf_counter()
                                ray.get(a.search.remote(q, 10))
                                calls.append(time.perf_counter() - t)
                            alone.append(max(calls))
                    idle = idle_cpu(ray, r.actors)
                    rows.append({"scatter": scatter, "batch": batch, "shards": args.shards,
                                 "idle_actor_cpu": idle,
                                 "sharded_p50_ms": p50(total), "slowest_shard_p50_ms": p50(slowest),
                                 "merge_p50_ms": p50(merge),
                                 "overhead_p50_ms": p50([a - b for a, b in zip(total, slowest)]),
                                 "ray_noop_calls_p50_ms": p50(noop), "unsplit_local_p50_ms": p50(local)})
                    if alone:  # what scattering adds over calling the slowest shard by itself
                        rows[-1]["slowest_shard_call_alone_p50_ms"] = p50(alone)
                        rows[-1]["overhead_over_call_alone_p50_ms"] = p50([a - b for a, b in zip(total, alone)])
            finally:
                if graph is not None:
                    graph.teardown()
                r.close()
    finally:
        ray.shutdown()
    return rows


def bench_embed(args, tmp: Path) -> list[dict]:
    import ray

    from unirag.data.wiki import wiki_passages
    from unirag.retrieval.build import build_index

    passages = list(wiki_passages(limit=args.passages))
    from unirag.models.encoder import Encoder

    rows = []
    t = time.perf_counter()
    enc = Encoder.from_pretrained("all-minilm-l6-v2")
    load = time.perf_counter() - t
    t = time.perf_counter()
    build_index(passages, tmp / "e-single", encoder=enc, bm25=False, progress=False)
    dt = time.perf_counter() - t
    rows.append({"mode": "single process", "workers": 1, "seconds": load + dt,
                 "passages_per_s": len(passages) / (load + dt), "startup_s": load,
                 "steady_passages_per_s": len(passages) / dt})
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray encoder actor of 1 CPU runs
    t = time.perf_counter()
    build_index(passages, tmp / "e-single1", encoder=enc, bm25=False, progress=False)
    dt = time.perf_counter() - t
    torch.set_num_threads(threads)
    rows.append({"mode": "single process, 1 thread", "workers": 1, "seconds": load + dt,
                 "passages_per_s": len(passages) / (load + dt), "startup_s": load,
                 "steady_passages_per_s": len(passages) / dt})
    for workers in (1, 2):
        t = time.perf_counter()
        ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        start = time.perf_counter() - t
        # a 1-passage build measures the pool's start-up (actors import torch and load the encoder)
        t = time.perf_counter()
        build_index(passages[:1], tmp / "e-warm", encoder="all-minilm-l6-v2", bm25=False, progress=False,
                    ray={"concurrency": workers, "num_cpus": 1, "batch_size": 256})
        warm = time.perf_counter() - t
        t = time.perf_counter()
        build_index(passages, tmp / f"e-ray{workers}", encoder="all-minilm-l6-v2", bm25=False, progress=False,
                    ray={"concurrency": workers, "num_cpus": 1, "batch_size": 256})
        dt = time.perf_counter() - t
        ray.shutdown()
        rows.append({"mode": "ray data", "workers": workers, "seconds": dt, "passages_per_s": len(passages) / dt,
                     "startup_s": warm, "steady_passages_per_s": len(passages) / max(dt - warm, 1e-9)})
        print(f"ray cluster start: {start:.1f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--passages", type=int, default=2000)
    ap.add_argument("--skip-embed", action="store_true", help="keep the embedding rows of the last results file")
    ap.add_argument("--skip-search", action="store_true", help="keep the search rows of the last results file")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent / "src"))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        if args.skip_search:  # keep the search rows of the last run
            import json

            last = Path(__file__).resolve().parent / "results" / "ray.json"
            search_rows = json.loads(last.read_text())["sharded_search"] if last.is_file() else []
        else:
            search_rows = bench_search(args, Path(d))
        print(table(search_rows, f"sharded Flat search, {args.n} x {args.dim}, k=10 (ms)"), flush=True)
        if args.skip_embed:  # keep the embedding rows of the last run
            import json

            last = Path(__file__).resolve().parent / "results" / "ray.json"
            embed_rows = json.loads(last.read_text())["embedding"] if last.is_file() else []
        else:
            embed_rows = bench_embed(args, Path(d))
    if embed_rows:
        print(table(embed_rows, f"embedding {args.passages} Wikipedia summaries with all-MiniLM-L6-v2"))
    load_after = os.getloadavg()
    print(f"load average before {load_before}, after {load_after}")
    path = save("ray", {"args": vars(args), "load_average_before": load_before, "load_average_after": load_after,
                        "sharded_search": search_rows, "embedding": embed_rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
