"""Where a sharded search's time over its slowest shard goes on this machine: Ray's round trip.

    python bench/bench_ray_roundtrip.py [--rounds 300] [--n 50000] [--dim 384]

1. Two empty actor calls (``ray.get([a.f.remote() for a in actors])``), p50, on an idle machine and
   while two other processes spin on both cores.
2. Two actors each holding a FAISS Flat index of ``--n`` clustered vectors (one shard's worth),
   searched together for one query: timestamped inside the actors, the p50 of how long after the
   query was sent the later shard starts (dispatch), how long after the later search ends the
   driver has both replies (return), and the whole call minus the slower search; with the actors'
   search thread at normal priority and lowered with ``os.nice(10)``.

Prints a table and writes bench/results/ray_roundtrip.json (with the load average).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def clustered(n: int, d: int, seed: int = 0):
    """Unit vectors around 1000 random centres (as bench_ray.py's; defined here because the actors
    pickle it with this script: Ray's workers cannot import the bench folder's modules)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    x = centres[rng.integers(0, 1000, n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Empty:
    """An actor that does nothing."""

    def f(self) -> None:
        return None


class Shard:
    """A FAISS Flat index of clustered vectors; ``search`` returns its wall-clock start and end."""

    def __init__(self, n: int, dim: int, seed: int, nice: int):
        import faiss

        self.index = faiss.IndexFlatIP(dim)
        self.index.add(clustered(n, dim, seed))
        if nice:
            os.nice(nice)  # this thread only (Linux): the actor's Ray I/O threads keep their priority

    def search(self, q, k: int):
        t0 = time.time()
        scores, ids = self.index.search(q, k)
        return scores, ids, t0, time.time()


def p50(xs) -> float:
    return round(statistics.median(xs) * 1e3, 3)


def empty_calls(ray, rounds: int) -> float:
    actors = [ray.remote(num_cpus=0)(Empty).remote() for _ in range(2)]
    ray.get([a.f.remote() for a in actors])
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        ray.get([a.f.remote() for a in actors])
        ts.append(time.perf_counter() - t)
    for a in actors:
        ray.kill(a)
    return p50(ts)


def shard_calls(ray, args, nice: int) -> dict:
    actors = [ray.remote(num_cpus=1)(Shard).remote(args.n, args.dim, s, nice) for s in (0, 1)]
    queries = clustered(args.rounds, args.dim, seed=2)
    ray.get([a.search.remote(queries[:1], 10) for a in actors])
    dispatch, ret, over, slow = [], [], [], []
    for i in range(args.rounds):
        sent = time.time()
        out = ray.get([a.search.remote(queries[i:i + 1], 10) for a in actors])
        done = time.time()
        dispatch.append(max(o[2] for o in out) - sent)
        ret.append(done - max(o[3] for o in out))
        slow.append(max(o[3] - o[2] for o in out))
        over.append(done - sent - slow[-1])
    for a in actors:
        ray.kill(a)
    return {"search_thread_nice": nice, "slowest_search_p50_ms": p50(slow), "later_start_p50_ms": p50(dispatch),
            "return_after_later_end_p50_ms": p50(ret), "call_minus_slowest_p50_ms": p50(over)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--n", type=int, default=50_000, help="vectors per shard")
    ap.add_argument("--dim", type=int, default=384)
    args = ap.parse_args()
    import ray

    load_before = os.getloadavg()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        idle = empty_calls(ray, args.rounds)
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(2)]
        for p in spinners:
            p.start()
        time.sleep(0.5)
        busy = empty_calls(ray, args.rounds)
        stop.set()
        for p in spinners:
            p.join()
        empty = [{"machine": "idle", "two_empty_calls_p50_ms": idle},
                 {"machine": "2 spinning processes", "two_empty_calls_p50_ms": busy}]
        shards = [shard_calls(ray, args, nice) for nice in (0, 10)]
    finally:
        ray.shutdown()
    print(table(empty, "two empty actor calls (ms)"))
    print(table(shards, f"two shard actors ({args.n} x {args.dim} Flat each), one query, k=10 (ms)"))
    print(f"load average before {load_before}, after {os.getloadavg()}")
    out = save("ray_roundtrip", {"args": vars(args), "load_average_before": load_before,
                                 "load_average_after": os.getloadavg(), "empty_calls": empty, "shards": shards})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
