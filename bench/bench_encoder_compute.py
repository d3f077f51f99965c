"""Retrieval with a corpus embedded in bfloat16 matrix products against float32: FanOutQA dev
recall@k / MRR@k / nDCG@k of the dense retriever over the 10,033 summaries, each index embedded
once with ``Encoder.compute = "bfloat16"`` (autocast) and once in float32, queries in float32.

    python bench/bench_encoder_compute.py [--threads 2]

The bfloat16 path is a candidate of the corpus runtime race (``faster_runtime``) only on CPUs with
native bfloat16; this is the measurement that admits it (the bar: recall@5 within 0.005 of
float32, as for an int8 encoder). Prints a table and writes bench/results/encoder_compute.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from unirag.data.wiki import wiki_passages
    from unirag.models.encoder import Encoder
    from unirag.models.registry import cpu_has_bf16, cpu_model
    from unirag.retrieval import build_index

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for compute in ("float32", "bfloat16"):
            enc = Encoder.from_pretrained("all-minilm-l6-v2")
            enc.compute = compute
            folder = Path(tmp) / compute
            t = time.perf_counter()
            build_index(wiki_passages(), folder, encoder=enc, bm25=False, progress=False, threads=args.threads)
            seconds = time.perf_counter() - t
            out = subprocess.run(["unirag", "eval", "retrieval", "-r", "dense", "-i", str(folder), "--json"],
                                 capture_output=True, text=True, check=True).stdout
            res = json.loads(out)["results"]["dense"]
            rows.append({"compute": compute, "build_s": seconds, "passages_per_s": 10_033 / seconds,
                         **{m: res[m] for m in ("recall@1", "recall@5", "recall@20", "mrr@10", "ndcg@10")}})
            print(table(rows[-1:], f"corpus embedded in {compute}"), flush=True)
    delta = {m: rows[1][m] - rows[0][m] for m in ("recall@1", "recall@5", "recall@20", "mrr@10", "ndcg@10")}
    print(table(rows, "FanOutQA dev (558 questions), dense, all 10,033 passages"))
    print("bfloat16 - float32:", {k: round(v, 5) for k, v in delta.items()})
    print("wrote", save("encoder_compute", {"config": vars(args), "cpu": cpu_model(), "native_bf16": cpu_has_bf16(),
                                            "rows": rows, "delta": delta}))


if __name__ == "__main__":
    main()
