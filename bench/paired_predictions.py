"""Compare two per-question prediction files of ``unirag eval qa --out`` on the same questions:
identical answers, questions where B's F1 is higher / lower, and the mean F1 difference (B - A)
with its standard error.

    python bench/paired_predictions.py A/qa-fanoutqa-single-pipeline.jsonl B/qa-fanoutqa-single-pipeline.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def read(path: str) -> dict[str, dict]:
    """``id -> prediction row`` of one file."""
    from unirag.corpus.jsonl import iter_jsonl

    return {str(row["id"]): row for _, row in iter_jsonl(path)}


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """Paired figures over the questions both files answer (F1 in points)."""
    ids = sorted(a.keys() & b.keys())
    diff = [100 * (b[i]["f1"] - a[i]["f1"]) for i in ids]
    return {"n": len(ids), "identical_answers": sum(a[i]["answer"] == b[i]["answer"] for i in ids),
            "f1_b_better": sum(d > 0 for d in diff), "f1_b_worse": sum(d < 0 for d in diff),
            "f1_difference": statistics.mean(diff),
            "f1_difference_stderr": statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    print(json.dumps(compare(read(args.a), read(args.b)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
