"""Collect the classic-RAG real run (RAG-Token, RAG-Sequence, hot-swap) into one JSON and a table.

The run itself (about an hour on 2 CPU cores, one torch thread each step)::

    unirag train rag --config configs/rag_token_smollm2.yaml
    unirag rag swap-demo runs/rag-token-smollm2/final --out runs/rag-swap --n 16
    unirag train rag --config configs/rag_sequence_smollm2.yaml
    python bench/collect_rag_real_run.py          # -> bench/results/rag_real_run.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import yaml

RUNS = {"rag-token-smollm2": "RAG-Token", "rag-sequence-smollm2": "RAG-Sequence"}


def run_record(folder: Path) -> dict:
    """Config, summary (EM/F1 before and after, predictions) and training log of one run folder."""
    summary = json.loads((folder / "summary.json").read_text())
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    return {"config": yaml.safe_load((folder / "train_config.yaml").read_text()), **summary, "log": log}


def main() -> None:
    """Read the run folders, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--swap", default="runs/rag-swap/swap.json")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rag_real_run.json"))
    a = ap.parse_args()
    report: dict = {"machine": f"{platform.machine()}, 2 CPU cores, torch CPU, one torch thread per job",
                    "commands": __doc__.split("::")[1].strip().splitlines()}
    print(f"{'system':<34} {'steps':>5} {'EM':>6} {'F1':>6}")
    for name, label in RUNS.items():
        folder = Path(a.runs) / name
        if not (folder / "summary.json").is_file():
            print(f"{label}: no run at {folder}")
            continue
        rec = report[name] = run_record(folder)
        dec = rec["config"].get("eval_decoding", "greedy")
        for when in ("before", "after"):
            m = rec.get(when)
            if m:
                what = f"{label} untrained ({dec})" if when == "before" else f"{label} trained ({dec})"
                print(f"{what:<34} {rec['steps'] if when == 'after' else 0:>5} {m['em']:>6.1f} {m['f1']:>6.1f}")
    if Path(a.swap).is_file():
        swap = report["hot_swap"] = json.loads(Path(a.swap).read_text())
        print(f"hot-swap on {swap['n']} questions: states A's fact before {swap['before_states_a']:.3f}, "
              f"B's fact after {swap['after_states_b']:.3f}, still A's after {swap['after_still_states_a']:.3f}")
    Path(a.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
