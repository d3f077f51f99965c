"""One decoding step of the packaged generators with transformers' ``DynamicCache`` (which copies
the whole cache at every step) against unirag's in-place cache (``unirag.models.kv_cache``), for
batches of 1 and 8 rows after a prompt of ``--prompt`` tokens.

    python bench/bench_decode.py [--generators smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct]

Medians of interleaved rounds (each round: prefill, then ``--steps`` timed steps per cache kind).
Prints a table and writes bench/results/decode_step.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, table  # noqa: E402


def step_times(model, make_cache, batch: int, prompt: int, steps: int) -> tuple[list[float], object]:
    """Seconds of each of ``steps`` one-token steps after a ``prompt``-token prefill; last logits."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 20000, (batch, prompt), generator=g)
    out = []
    with torch.inference_mode():
        cache = make_cache()
        model.model(input_ids=ids, past_key_values=cache, use_cache=True)
        nxt = torch.randint(100, 20000, (batch, 1), generator=g)
        for _ in range(steps):
            t = time.perf_counter()
            h = model.model(input_ids=nxt, past_key_values=cache, use_cache=True).last_hidden_state
            logits = model.lm_head(h[:, -1])
            out.append(time.perf_counter() - t)
    return out, logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt", type=int, default=400, help="prompt tokens per row (3 passages are about 400)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from transformers import DynamicCache

    from unirag.models.generator import load_causal_lm
    from unirag.models.kv_cache import new_cache
    from unirag.models.registry import default_dtype

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.generators.split(","):
        dtype = default_dtype(name)
        model, _ = load_causal_lm(name, dtype=dtype)
        kinds = {"dynamic": lambda: DynamicCache(config=model.config), "in_place": lambda: new_cache(model.config)}
        for batch in map(int, args.batches.split(",")):
            times: dict[str, list[float]] = {k: [] for k in kinds}
            logits = {}
            step_times(model, kinds["in_place"], batch, args.prompt, 2)  # warm-up
            for _ in range(args.rounds):
                for kind, make in kinds.items():
                    ts, logits[kind] = step_times(model, make, batch, args.prompt, args.steps)
                    times[kind] += ts
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append({"generator": name, "dtype": dtype, "rows": batch, "dynamic_ms": med["dynamic"],
                         "in_place_ms": med["in_place"], "speedup": med["dynamic"] / med["in_place"],
                         "same_logits": bool(torch.equal(logits["dynamic"], logits["in_place"]))})
            print(table(rows[-1:], f"{name} ({dtype}), {batch} row(s), {args.prompt}-token prompt"), flush=True)
    print(table(rows, "decoding step, median ms"))
    print("wrote", save("decode_step", {"config": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
