"""Exact match on the 160 held-out FanOutQA single-hop questions, split by what the training
split already holds: a training-split sub-question with the same evidence page and the same answer
("repeated", e.g. "What is the capital of China?" -> Beijing under two top-level questions), the
same page with other answers ("page seen"), or a page no training-split sub-question uses
("page unseen"). A model trained on every training-split sub-question (the first release) has seen
the "repeated" answers; the leak-checked packaged set leaves those sub-questions out.

    python bench/heldout_overlap.py NAME=DIR/qa-fanoutqa-single-ENGINE.jsonl [NAME=FILE ...] [--out F]

Each FILE is a per-question prediction file of ``unirag eval qa --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def overlap_classes() -> dict[str, str]:
    """Held-out single-hop question id -> ``repeated`` / ``page seen`` / ``page unseen``."""
    from unirag.data.fanoutqa import fanoutqa_qa
    from unirag.data.qa import normalize_answer

    def key(answers: list[str]) -> frozenset[str]:
        return frozenset(normalize_answer(a) for a in answers)

    by_page: dict[str, set[frozenset[str]]] = defaultdict(set)
    for it in fanoutqa_qa("single", "train"):
        by_page[it.evidence[0]].add(key(it.answers))
    out = {}
    for it in fanoutqa_qa("single", "heldout"):
        page = it.evidence[0]
        out[it.id] = ("repeated" if key(it.answers) in by_page.get(page, ()) else
                      "page seen" if page in by_page else "page unseen")
    return out


def main() -> int:
    from unirag.corpus.jsonl import iter_jsonl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", nargs="+", help="NAME=FILE (per-question JSONL of `unirag eval qa --out`)")
    ap.add_argument("--out", default=None, help="write the report as JSON here too")
    args = ap.parse_args()
    classes = overlap_classes()
    names = ("repeated", "page seen", "page unseen")
    report: dict = {"questions": {c: sum(v == c for v in classes.values()) for c in names}, "systems": {}}
    for spec in args.predictions:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"error: {spec!r}: expected NAME=FILE")
        rows = [row for _, row in iter_jsonl(path)]
        missing = [r["id"] for r in rows if r["id"] not in classes]
        if missing or len(rows) != len(classes):
            raise SystemExit(f"error: {path}: not the {len(classes)} held-out single-hop questions")
        em = {c: [r["em"] for r in rows if classes[r["id"]] == c] for c in names}
        rest = em["page seen"] + em["page unseen"]
        report["systems"][name] = {
            "file": path,
            "exact_match": {c: int(sum(v)) for c, v in em.items()},
            "em_all": 100.0 * sum(r["em"] for r in rows) / len(rows),
            "em_without_repeated": 100.0 * sum(rest) / len(rest),
        }
    head = f"{'system':28} {'EM all':>7} {'EM w/o repeated':>16} " + " ".join(
        f"{c + ' (' + str(report['questions'][c]) + ')':>17}" for c in names)
    print(head)
    for name, s in report["systems"].items():
        print(f"{name:28} {s['em_all']:7.1f} {s['em_without_repeated']:16.1f} "
              + " ".join(f"{s['exact_match'][c]:17d}" for c in names))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
