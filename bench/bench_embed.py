"""Corpus embedding throughput: unirag (length-sorted batches) vs sentence-transformers ``encode``
with the same model and batch size, and vs unirag with unsorted batches.

    python bench/bench_embed.py [--n 512] [--batch-size 64] [--rounds 3]

Uses the packaged all-MiniLM-L6-v2 and the first N Wikipedia summaries ("title. summary").
Prints a table and writes bench/results/bench_embed.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, save, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from unirag.data import wiki_passages
    from unirag.models import Encoder, resolve_model

    torch.set_num_threads(torch.get_num_threads())
    texts = [p.contents for p in wiki_passages()[: args.n]]
    enc = Encoder.from_pretrained("all-minilm-l6-v2")
    st = SentenceTransformer(resolve_model("all-minilm-l6-v2"), device="cpu")
    bs = args.batch_size
    ours = enc.encode(texts, batch_size=bs)
    ref = st.encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True)
    max_diff = float(np.abs(ours - ref).max())
    med = interleaved({
        "unirag_encode_sorted": lambda: enc.encode(texts, batch_size=bs, sort_by_length=True),
        "sentence_transformers": lambda: st.encode(texts, batch_size=bs, normalize_embeddings=True),
        "unirag_encode_unsorted": lambda: enc.encode(texts, batch_size=bs, sort_by_length=False),
    }, rounds=args.rounds, warmup=0)
    base = med["sentence_transformers"]
    rows = [{"method": k, "seconds": v, "passages_per_s": args.n / v, "vs_sentence_transformers": base / v}
            for k, v in med.items()]
    print(table(rows, f"embedding {args.n} Wikipedia summaries, batch {bs}, medians of {args.rounds} interleaved rounds "
                      f"(max |unirag - ST| = {max_diff:.2e})"))
    path = save("bench_embed", {"args": vars(args), "max_abs_diff_vs_st": max_diff, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
