"""Multi-hop retrieval of the pipeline engine against single-shot retrieval with the same passage
budget, on the 93 held-out FanOutQA top-level questions (default index, dense retriever, SmolLM2
reader, greedy).

Evidence recall@B: the share of a question's corpus-present evidence pages among the passages read
with a budget of B passages, averaged over the questions that have any (46 of 93). Single-shot reads
the top-B of one search for the question. Multi-hop reads ``k`` passages per hop (hop 0: the
question; then the reader's follow-up queries), never one twice, until B passages or ``hops``
retrievals or the reader says DONE. The B=10 figures come from the first two hops of the B=20 run:
greedy follow-ups depend only on what was read before, so a run with ``max_passages=10`` reads
exactly those passages (checked on the first batch).

EM / F1 (SQuAD normalisation on the short answer): the engine's whole answer path (``ask_batch``:
hops, then the final answer over every passage read, numbered across hops) for single-shot top-B
and multi-hop B, on ``--answer-limit`` questions (default all 93).

    python bench/bench_multihop.py                       # table; writes bench/results/multihop.json
    python bench/bench_multihop.py --answer-limit 0      # recall only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, table  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def finish(gen):
    """Run a generator to its end and return its return value (``run_hops``' prepared prompts)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def recall(read: list[str], evidence: list[str]) -> float:
    return len(set(read) & set(evidence)) / len(set(evidence))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="fanoutqa-multi")
    ap.add_argument("--k", type=int, default=5, help="passages per hop")
    ap.add_argument("--hops", type=int, default=None, help="retrievals (default: 4; plan mode: budget - k + 1)")
    ap.add_argument("--hop-mode", default="followup", choices=["followup", "plan"])
    ap.add_argument("--plan-shots", type=int, default=4)
    ap.add_argument("--plan-samples", type=int, default=2)
    ap.add_argument("--plan-no-repeat", type=int, default=None, help="no n-gram of this many tokens twice in a plan "
                    "(default: the engine's)")
    ap.add_argument("--plan-anchor", default=None, choices=["on", "off"],
                    help="a planned name no passage is titled with is searched after the question "
                    "(default: the engine's)")
    ap.add_argument("--plan-indexed", default=None, choices=["on", "off"],
                    help="examples show only articles the index holds (default: the engine's)")
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"],
                    help="FanOutQA questions (train: the plan examples' own, each without itself)")
    ap.add_argument("--budgets", default="10,20")
    ap.add_argument("--generator", default="smollm2-135m-instruct")
    ap.add_argument("--retriever", default="dense")
    ap.add_argument("--followup-tokens", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--answer-limit", type=int, default=None, help="questions answered for EM/F1 (default all)")
    ap.add_argument("--qa-budgets", default=None, help="budgets answered for EM/F1 (default: all of --budgets)")
    ap.add_argument("--qa-only", action="store_true", help="keep the recall figures of --out, run EM/F1 only")
    ap.add_argument("--qa-modes", default="single,multi",
                    help="which runs are answered for EM/F1; one left out keeps its figures from --qa-from")
    ap.add_argument("--qa-from", default=None, help="an earlier result file whose EM/F1 the modes left out keep")
    ap.add_argument("--no-anchor", action="store_true", help="search the follow-up alone (not question + follow-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "multihop.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import unirag
    from unirag.data.qa import load_qa_set

    budgets = sorted(int(b) for b in args.budgets.split(","))
    if args.hops is None:
        args.hops = max(budgets) - args.k + 1 if args.hop_mode == "plan" else 4
    if args.split == "train":
        from unirag.data.fanoutqa import fanoutqa_qa

        items = fanoutqa_qa("multi", "train")
    else:
        items = load_qa_set(args.set)
    with_ev = [it for it in items if it.evidence]
    rag = unirag.RAG.load(engine="pipeline", generator=args.generator, retriever=args.retriever, progress=False)
    eng = rag.engine
    base = dataclasses.replace(eng.config, followup_tokens=args.followup_tokens, followup_anchor=not args.no_anchor,
                               hop_mode=args.hop_mode, plan_shots=args.plan_shots, plan_samples=args.plan_samples,
                               **({} if args.plan_no_repeat is None else {"plan_no_repeat": args.plan_no_repeat}),
                               **({} if args.plan_indexed is None else {"plan_indexed": args.plan_indexed == "on"}),
                               **({} if args.plan_anchor is None else {"plan_anchor": args.plan_anchor == "on"}))
    params = unirag.SamplingParams(max_new_tokens=args.max_new_tokens)
    report: dict = {"set": args.set, "n": len(items), "n_with_evidence": len(with_ev), "generator": args.generator,
                    "retriever": args.retriever, "k_per_hop": args.k, "hops": args.hops, "budgets": budgets,
                    "followup_tokens": args.followup_tokens, "max_new_tokens": args.max_new_tokens,
                    "threads": args.threads, "followup_anchor": not args.no_anchor,
                    "hop_mode": args.hop_mode, "split": args.split, **({"plan_shots": args.plan_shots,
                    "plan_samples": args.plan_samples, "plan_no_repeat": base.plan_no_repeat,
                    "plan_indexed": base.plan_indexed, "plan_anchor": base.plan_anchor} if args.hop_mode == "plan" else {}),
                    "command": " ".join(["python", *sys.argv]), "recall": {}, "qa": {}}
    out = Path(args.out)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    if args.qa_only:
        report = json.loads(out.read_text()) | {"qa": {}, "answer_command": report["command"]}
    else:
        recall_phase(args, report, eng, base, params, with_ev, budgets, save)
    qa_phase(args, report, rag, eng, base, params, items, budgets, save)


def recall_phase(args, report, eng, base, params, with_ev, budgets, save) -> None:
    from unirag.pipeline.iterative import run_hops

    # --- evidence recall ------------------------------------------------------------------
    t0 = time.perf_counter()
    top = max(budgets)
    res = eng.retriever.search([it.question for it in with_ev], top)
    for b in budgets:
        report["recall"][f"single@{b}"] = sum(recall(res.ids[i][:b], it.evidence)
                                              for i, it in enumerate(with_ev)) / len(with_ev)
    log(f"single-shot recall {report['recall']} ({time.perf_counter() - t0:.1f} s)")
    eng.config = dataclasses.replace(base, hops=args.hops, k=args.k, max_passages=top)
    t0 = time.perf_counter()
    per_q: list[dict] = []
    for s in range(0, len(with_ev), args.batch_size):
        chunk = with_ev[s : s + args.batch_size]
        prepared = finish(run_hops(eng, [it.question for it in chunk], [params] * len(chunk)))
        for j, (it, (_, ans)) in enumerate(zip(chunk, prepared)):
            read = [src.id for src in ans.sources]
            per_q.append({"id": it.id, "question": it.question, "evidence": it.evidence, "read": read,
                          "hop_of": [src.meta["hop"] for src in ans.sources],
                          "queries": ans.extra["hops"]["queries"], "replies": ans.extra["hops"]["replies"],
                          "stopped": ans.extra["hops"]["stopped"],
                          **{f"recall@{b}": recall(read[:b], it.evidence) for b in budgets},
                          **{f"single_recall@{b}": recall(res.ids[s + j][:b], it.evidence) for b in budgets}})
        if s == 0 and len(budgets) > 1:  # the small budget as its own run reads the same passages
            eng.config = dataclasses.replace(base, hops=args.hops, k=args.k, max_passages=budgets[0])
            small = finish(run_hops(eng, [it.question for it in chunk], [params] * len(chunk)))
            same = all([x.id for x in a.sources] == p["read"][: budgets[0]]
                       for (_, a), p in zip(small, per_q[-len(chunk):]))
            report["small_budget_prefix_checked"] = same
            log(f"budget {budgets[0]} run reads the first {budgets[0]} of the budget {top} run: {same}")
            eng.config = dataclasses.replace(base, hops=args.hops, k=args.k, max_passages=top)
        done = len(per_q)
        log(f"hops: {done}/{len(with_ev)} questions, "
            + ", ".join(f"recall@{b} {sum(p[f'recall@{b}'] for p in per_q) / done:.3f}" for b in budgets)
            + f" ({time.perf_counter() - t0:.0f} s)")
    for b in budgets:
        report["recall"][f"multi@{b}"] = sum(p[f"recall@{b}"] for p in per_q) / len(per_q)
    report["recall_seconds"] = time.perf_counter() - t0
    report["stopped"] = {k: sum(p["stopped"] == k for p in per_q) for k in {p["stopped"] for p in per_q}}
    report["mean_retrievals"] = sum(len(set(p["hop_of"])) for p in per_q) / len(per_q)
    report["per_question"] = per_q
    save()
    log(f"recall {report['recall']}")



def qa_phase(args, report, rag, eng, base, params, items, budgets, save) -> None:
    from unirag.eval.harness import score_answers

    with_ev = [it for it in items if it.evidence]
    top = max(budgets)
    # --- EM / F1 through the whole answer path ------------------------------------------------
    answer_items = items[: args.answer_limit] if args.answer_limit is not None else items
    if answer_items:
        qa_budgets = budgets if args.qa_budgets is None else [int(b) for b in args.qa_budgets.split(",")]
        earlier = json.loads(Path(args.qa_from).read_text())["qa"] if args.qa_from else {}
        for b in sorted(qa_budgets, reverse=True):  # the larger budget (the goal's) first
            for mode in ("single", "multi"):
                if mode not in args.qa_modes.split(","):
                    if f"{mode}@{b}" in earlier:
                        report["qa"][f"{mode}@{b}"] = earlier[f"{mode}@{b}"] | {"from": args.qa_from}
                    continue
                if mode == "single":
                    eng.config = dataclasses.replace(base, hops=1, k=b, max_passages=None)
                else:
                    eng.config = dataclasses.replace(base, hops=args.hops, k=args.k, max_passages=b)
                t0 = time.perf_counter()
                answers = []
                for s in range(0, len(answer_items), args.batch_size):
                    chunk = answer_items[s : s + args.batch_size]
                    answers += rag.ask_batch([it.question for it in chunk], params, batch_size=args.batch_size)
                    log(f"{mode}@{b}: answered {len(answers)}/{len(answer_items)} ({time.perf_counter() - t0:.0f} s)")
                m = score_answers(answer_items, answers)
                report["qa"][f"{mode}@{b}"] = {"n": m["n"], "em": m["em"], "f1": m["f1"],
                                               "evidence_recall": m["evidence_recall"],
                                               "n_with_evidence": m["n_with_evidence"],
                                               "passages_used": m["passages_used"],
                                               "mean_retrievals": m["mean_retrievals"],
                                               "latency_p50": m["latency_p50"], "latency_p95": m["latency_p95"],
                                               "seconds": time.perf_counter() - t0,
                                               "answers": [{"id": it.id, "short": a.short, "gold": it.answers}
                                                           for it, a in zip(answer_items, answers)]}
                save()
    rows = []
    for b in budgets:
        for mode in ("single", "multi"):
            qa = report["qa"].get(f"{mode}@{b}", {})
            rows.append({"mode": mode, "budget": b, "evidence recall": round(report["recall"][f"{mode}@{b}"], 3),
                         "EM": round(qa["em"], 1) if qa else "-", "F1": round(qa["f1"], 1) if qa else "-",
                         "n answered": qa.get("n", 0), "answer s": round(qa["seconds"], 1) if qa else "-"})
    for b in budgets:
        report[f"gain@{b}"] = report["recall"][f"multi@{b}"] - report["recall"][f"single@{b}"]
    save()
    print(table(rows, f"{args.set}: evidence recall over {len(with_ev)} questions with corpus evidence; "
                      f"multi-hop {args.k} passages per hop, at most {args.hops} hops"))
    print(f"gain in evidence recall@{top}: {report[f'gain@{top}']:+.3f} (goal +0.15)")


if __name__ == "__main__":
    main()
