"""How often a FanOutQA single-hop question's gold answer is inside the first N words of its
evidence passage (normalised containment, as EM normalises), and, given a per-question prediction
file of ``unirag eval qa --out``, how many questions whose inserted passages hold the answer the
engine answered exactly, and how many answers (first line) are the title of an inserted passage.

    python bench/answer_in_passage.py --words 48,120 [--predictions DIR/qa-fanoutqa-single-onegen.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from unirag.corpus.jsonl import iter_jsonl
    from unirag.data.qa import answer_in_text as contains
    from unirag.data.qa import load_qa_set
    from unirag.data.wiki import wiki_passages
    from unirag.models.decoding import cut_words

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="fanoutqa-single")
    ap.add_argument("--words", default="48,120")
    ap.add_argument("--predictions", default=None)
    args = ap.parse_args()
    passages = {p.id: p for p in wiki_passages()}
    items = load_qa_set(args.set)
    report: dict = {"set": args.set, "n": len(items), "gold_in_first_words": {}}
    for n in (int(w) for w in args.words.split(",")):
        report["gold_in_first_words"][n] = sum(
            any(e in passages and contains(cut_words(passages[e].contents, n), it.answers) for e in it.evidence)
            for it in items)
    if args.predictions:
        rows = [row for _, row in iter_jsonl(args.predictions)]
        held = [r for r in rows if contains(" ".join(s["text"] for s in r["sources"]), r["gold"])]
        from unirag.data.qa import normalize_answer

        titled = [r for r in rows if r["sources"] and normalize_answer(r["answer"].split("\n")[0])
                  in {normalize_answer(s.get("title", "")) for s in r["sources"]}]
        report["predictions"] = {"file": args.predictions, "n": len(rows), "exact_match": int(sum(r["em"] for r in rows)),
                                 "inserted_passages_hold_the_answer": len(held),
                                 "of_which_exact_match": int(sum(r["em"] for r in held)),
                                 "answer_is_an_inserted_title": len(titled)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
