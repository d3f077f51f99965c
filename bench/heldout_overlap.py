"""Exact match on the 160 held-out FanOutQA single-hop questions, split by what the training
split already holds: a training-split sub-question with the same evidence page and the same answer
("repeated", e.g. "What is the capital of China?" -> Beijing under two top-level questions), the
same page with other answers ("page seen"), or a page no training-split sub-question uses
("page unseen"). A model trained on every training-split sub-question (the first release) has seen
the "repeated" answers; the leak-checked packaged set leaves those sub-questions out.

    python bench/heldout_overlap.py NAME=DIR/qa-fanoutqa-single-ENGINE.jsonl [NAME=FILE ...] [--out F]
    python bench/heldout_overlap.py --lm NAME=MODEL_DIR [--lm NAME=DIR ...] [--lm-file F] [--out F]

Each FILE is a per-question prediction file of ``unirag eval qa --out DIR``. ``--lm`` gives the
held-out LM loss of each OneGen model (as ``bench/bench_onegen_recipe.py --parts lm`` computes it)
on the first release's held-out file (``--lm-file``, built by ``unirag train onegen-data --preset
first-release --out runs/onegen/data-v1``), whose hops are the held-out sub-questions: on all its
hops, without the repeated ones, and on the hops whose page is unseen only.
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


def split_heldout_file(path: str, classes: dict[str, str], keep: set[str], out: Path) -> int:
    """Write ``path`` (OneGen held-out JSONL) to ``out`` keeping only the hops (lines with a query
    token: sub-question, passage, answer) whose held-out sub-question's class is in ``keep``
    (matched by evidence page and answer; the closing ``Answer:`` line stays with its example, an
    example left without hops is dropped); the number of hops kept."""
    from unirag.data.fanoutqa import fanoutqa_qa
    from unirag.data.qa import normalize_answer

    by_page_answer: dict[tuple[str, str], str] = {}
    for it in fanoutqa_qa("single", "heldout"):
        for a in it.answers:
            by_page_answer[(it.evidence[0], normalize_answer(a))] = classes[it.id]
    kept_hops, lines_out = 0, []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        ex = json.loads(line)
        turn = next(m for m in ex["messages"] if m["role"] == "assistant")
        hops, rets, new_lines, new_rets = turn["content"].split("\n"), iter(ex["retrievals"]), [], []
        for hop in hops:
            if "[RQ]" not in hop:
                new_lines.append(hop)
                continue
            ret = next(rets)
            answer = hop.rsplit("</passage>", 1)[-1]
            cls = next((by_page_answer[(pos, normalize_answer(a))] for pos in ret["positives"]
                        for a in [answer, *answer.split(", ")] if (pos, normalize_answer(a)) in by_page_answer),
                       None)
            if cls is None:
                raise SystemExit(f"error: {path}: {ex['id']}: hop {hop[:60]!r} is no held-out sub-question")
            if cls in keep:
                new_lines.append(hop)
                new_rets.append(ret)
        if new_rets:
            turn["content"] = "\n".join(new_lines)
            ex["retrievals"] = new_rets
            lines_out.append(json.dumps(ex, ensure_ascii=False))
            kept_hops += len(new_rets)
    out.write_text("\n".join(lines_out) + "\n", encoding="utf-8")
    return kept_hops


def lm_report(models: list[str], lm_file: str, docs: str, classes: dict[str, str], work: Path) -> dict:
    """Held-out LM loss of each ``NAME=DIR`` model on ``lm_file`` split by overlap class."""
    from bench.bench_onegen_recipe import lm_losses

    work.mkdir(parents=True, exist_ok=True)
    splits = {"all hops": {"repeated", "page seen", "page unseen"}, "without repeated": {"page seen", "page unseen"},
              "page unseen": {"page unseen"}}
    files, hops = {}, {}
    for name, keep in splits.items():
        files[name] = str(work / (name.replace(" ", "_") + ".jsonl"))
        hops[name] = split_heldout_file(lm_file, classes, keep, Path(files[name]))
    out: dict = {"file": lm_file, "hops": hops, "models": {}}
    for spec in models:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"error: --lm {spec!r}: expected NAME=MODEL_DIR")
        out["models"][name] = {"model": folder, **lm_losses(folder, files, docs)}
    return out


def main() -> int:
    from unirag.corpus.jsonl import iter_jsonl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", nargs="*", help="NAME=FILE (per-question JSONL of `unirag eval qa --out`)")
    ap.add_argument("--lm", action="append", default=[], help="NAME=MODEL_DIR: held-out LM loss by overlap class")
    ap.add_argument("--lm-file", default="runs/onegen/data-v1/heldout.jsonl")
    ap.add_argument("--docs", default="runs/onegen/data-v1/docs.jsonl")
    ap.add_argument("--work", default="runs/onegen/overlap", help="where the split held-out files go")
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
    if args.lm:
        report["lm"] = lm_report(args.lm, args.lm_file, args.docs, classes, Path(args.work))
        print(f"\nheld-out LM loss on ordinary text tokens, {args.lm_file} (hops kept: {report['lm']['hops']})")
        for name, m in report["lm"]["models"].items():
            print(f"{name:28} " + " ".join(f"{k}: {v['text']:.4f}" for k, v in m.items() if isinstance(v, dict)))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
