"""What the multi-hop loop could reach with a reader that decomposes well: the same budget and
loop (hop 0 = the question, then one search per follow-up, only passages not read yet, at most B in
all), but the follow-ups are FanOutQA's own gold sub-questions (the leaves of each question's
decomposition, in order) instead of the reader's. Retrieval only (no generator): evidence
recall@10/@20 on the held-out top-level questions with corpus evidence, beside single-shot.

    python bench/multihop_oracle.py     # prints a table, writes bench/results/multihop_oracle.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, table  # noqa: E402


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from unirag.data.fanoutqa import fanoutqa_split
    from unirag.data.qa import load_qa_set
    from unirag.retrieval.build import ensure_default_index
    from unirag.retrieval.loader import load_retriever

    retriever = load_retriever(ensure_default_index(progress=False), "dense")
    items = [it for it in load_qa_set("fanoutqa-multi") if it.evidence]
    leaves = {q.id: [lf.question for lf in q.leaves] for q in fanoutqa_split()[1]}

    def rec(read: list[str], ev: list[str]) -> float:
        return len(set(read) & set(ev)) / len(set(ev))

    single = retriever.search([it.question for it in items], 20)
    rows, report = [], {"n_with_evidence": len(items), "rows": []}
    for per_hop in (5, 2):
        for budget in (10, 20):
            total = 0.0
            for i, it in enumerate(items):
                read: list[str] = []
                for q in [it.question, *leaves[it.id]]:
                    if len(read) >= budget:
                        break
                    ids = retriever.search([q], per_hop + len(read)).ids[0]
                    read += [x for x in ids if x not in read][: min(per_hop, budget - len(read))]
                total += rec(read, it.evidence)
            row = {"follow-ups": "gold sub-questions", "per hop": per_hop, "budget": budget,
                   "oracle recall": round(total / len(items), 3),
                   "single-shot": round(sum(rec(single.ids[i][:budget], it.evidence)
                                            for i, it in enumerate(items)) / len(items), 3)}
            rows.append(row)
    report["rows"] = rows
    out = RESULTS / "multihop_oracle.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows, f"fanoutqa-multi held-out, {len(items)} questions with corpus evidence"))


if __name__ == "__main__":
    main()
