"""What fills the passage budget of plan-mode multi-hop after the planned names, compared on the
plans an earlier ``bench_multihop.py --hop-mode plan`` run wrote (its ``per_question`` replies).

Every variant reads what the engine reads first (the question's top ``k`` passages, then one
passage per planned name: the passage titled with it, else the name's best hit) and differs only
in what fills the rest of the budget (retrieval only, evidence recall@10/@20 as in
``bench_multihop.py``):

- ``question``: the question's own ranking (the engine's fill);
- ``rerank:<g>``: the question's top 60 re-scored by ``score + g * mean cosine to the named
  passages`` (pages of the same kind as the planned ones rise);
- ``rocchio:<b>``: a new search with ``unit(q) + b * unit(mean of the named passages' vectors)``
  (pseudo-relevance feedback from the plan);
- ``describe``: the reader rewrites the question as a search for the group of things it is about
  ("the five most populous countries"); that ranking, then the question's;
- ``candidates`` (``--candidates``, slow): the plan itself chooses from the question's top 30
  titles, shown in the prompt (and each example's own top 30 in its examples).

    python bench/multihop_fill.py --train-from bench/results/multihop_plan_train_indexed.json \\
        --heldout-from bench/results/multihop_plan.json        # -> bench/results/multihop_fill.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, table  # noqa: E402

DESCRIBE = ("Write a search query that finds the things this question is about: describe them as a group, "
            "leaving out what the question asks about each of them.\n"
            "Example: 'What are the capitals of the five most populous countries?' -> most populous countries "
            "in the world\n"
            "Example: 'When were the three tallest buildings in Asia completed?' -> tallest buildings in Asia\n"
            "Question: {q}\nSearch query:")


def unit(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)


def recall(read: list[str], evidence: list[str], budget: int) -> float:
    return len(set(read[:budget]) & set(evidence)) / len(set(evidence))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-from", default=str(RESULTS / "multihop_plan_train_indexed.json"))
    ap.add_argument("--heldout-from", default=str(RESULTS / "multihop_plan.json"))
    ap.add_argument("--generator", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--k", type=int, default=5, help="the question's passages read first (hop 0)")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--rerank", default="0.25,0.5,1.0")
    ap.add_argument("--rocchio", default="0.5,1.0,2.0")
    ap.add_argument("--candidates", action="store_true", help="also the candidate-choosing plan (about 8 min "
                    "for the train questions on 2 cores)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "multihop_fill.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import unirag
    from unirag.data.fanoutqa import fanoutqa_qa
    from unirag.engine import hits
    from unirag.pipeline.plan import merge_plans, parse_plan, title_key
    from unirag.sampling_params import SamplingParams

    rag = unirag.RAG.load(engine="pipeline", generator=args.generator, progress=False)
    eng = rag.engine
    ret, gen = eng.retriever, eng.generator
    store, titles = ret.store, eng.titles()
    report: dict = {"generator": args.generator, "k": args.k, "budget": args.budget,
                    "command": " ".join(["python", *sys.argv]), "splits": {}}
    rows_out = []
    for split, src in (("train", args.train_from), ("heldout", args.heldout_from)):
        plans = {q["question"]: q["replies"] for q in json.loads(Path(src).read_text())["per_question"]}
        items = [it for it in fanoutqa_qa("multi", split) if it.evidence and it.question in plans]
        qs = [it.question for it in items]
        qv = unit(ret.embed_queries(qs)).astype(np.float32)
        deep = ret.search_vectors(qv, 60, return_vectors=True)

        def named_part(i: int, names: list[str]) -> tuple[list[str], list[int]]:
            """Hop 0 and one passage per name, as the engine reads them; the named passages' rows."""
            read: list[str] = []
            for p in hits(deep, i)[0][: args.k]:
                read.append(p.title)
            loose = [n for n in names if title_key(n) not in titles]
            found = ret.search(loose, 3) if loose else None
            m, named_rows = 0, []
            for n in names:
                if title_key(n) in titles:
                    p = store.get(titles[title_key(n)])
                    named_rows.append(store.row_of(p.id))
                    if p.title not in read:
                        read.append(p.title)
                else:
                    for p in hits(found, m)[0]:
                        if p.title not in read:
                            read.append(p.title)
                            break
                    m += 1
            return read, named_rows

        def fill(read: list[str], ranking: list[str]) -> list[str]:
            out = list(read)
            for t in ranking:
                if len(out) >= args.budget:
                    break
                if t not in out:
                    out.append(t)
            return out[: args.budget]

        variants: dict[str, list[list[str]]] = {}
        names = [merge_plans([parse_plan(r) for r in plans[q]], 16) for q in qs]
        parts = [named_part(i, n) for i, n in enumerate(names)]
        ranked = [[p.title for p in hits(deep, i)[0]] for i in range(len(qs))]
        variants["question"] = [fill(r, ranked[i]) for i, (r, _) in enumerate(parts)]
        for g in (float(x) for x in args.rerank.split(",") if x):
            got = []
            for i, (r, rows) in enumerate(parts):
                ps, sc = hits(deep, i)
                score = np.asarray(sc[: len(ps)], dtype=np.float32)
                if rows:
                    d = unit(ret.index.reconstruct(np.array([rows]))[0])
                    score = score + g * (unit(deep.vectors[i][: len(ps)]) @ d.T).mean(1)
                got.append(fill(r, [ps[j].title for j in np.argsort(-score, kind="stable")]))
            variants[f"rerank:{g}"] = got
        for b in (float(x) for x in args.rocchio.split(",") if x):
            got = []
            for i, (r, rows) in enumerate(parts):
                if not rows:
                    got.append(fill(r, ranked[i]))
                    continue
                d = unit(ret.index.reconstruct(np.array([rows]))[0])
                v = unit(qv[i] + b * unit(d.mean(0)))[None].astype(np.float32)
                got.append(fill(r, [p.title for p in hits(ret.search_vectors(v, 60), 0)[0]]))
            variants[f"rocchio:{b}"] = got
        t = time.perf_counter()
        outs = gen.generate_batch([gen.chat_prompt(DESCRIBE.format(q=q), system="You rewrite questions into "
                                                   "search queries.") for q in qs],
                                  SamplingParams(max_new_tokens=24, stop=["\n"]))
        descs = [o.text.strip().strip("\"'") or q for o, q in zip(outs, qs)]
        found = ret.search(descs, 40)
        variants["describe"] = [fill(r, [p.title for p in hits(found, i)[0]] + ranked[i])
                                for i, (r, _) in enumerate(parts)]
        seconds = {"describe": time.perf_counter() - t}
        if args.candidates:
            t = time.perf_counter()
            pl = eng.planner()
            ex_found = ret.search([e.question for e in pl.examples], 30)
            shown = [[p.title for p in hits(ex_found, j)[0]] for j in range(len(pl.examples))]
            order = pl.nearest(qs)
            prompts = []
            for i, q in enumerate(qs):
                near = [j for j in order[i] if pl.examples[j].question != q]
                for s in range(pl.samples):
                    idx = near[s * pl.shots:(s + 1) * pl.shots][::-1]
                    shots = "\n\n".join(f"Question: {pl.examples[j].question}\nSearch results: "
                                        f"{'; '.join(shown[j])}\nArticles: {'; '.join(pl.examples[j].articles)}"
                                        for j in idx)
                    prompts.append(f"{shots}\n\nQuestion: {q}\nSearch results: {'; '.join(ranked[i][:30])}\nArticles:")
            outs = gen.generate_batch(prompts, SamplingParams(max_new_tokens=128, stop=["\n"]))
            n = pl.samples
            chosen = [merge_plans([parse_plan(o.text) for o in outs[n * i:n * (i + 1)]], 16) for i in range(len(qs))]
            variants["candidates"] = [fill(named_part(i, c)[0], ranked[i]) for i, c in enumerate(chosen)]
            seconds["candidates"] = time.perf_counter() - t
        ev = [it.evidence for it in items]
        single = {b: statistics.mean(recall(ranked[i], ev[i], b) for i in range(len(qs))) for b in (10, args.budget)}
        res = {"n": len(qs), "single@10": single[10], f"single@{args.budget}": single[args.budget],
               "seconds": seconds, "variants": {}}
        for name, reads in variants.items():
            r10 = statistics.mean(recall(reads[i], ev[i], 10) for i in range(len(qs)))
            rb = statistics.mean(recall(reads[i], ev[i], args.budget) for i in range(len(qs)))
            res["variants"][name] = {"recall@10": r10, f"recall@{args.budget}": rb,
                                     f"gain@{args.budget}": rb - single[args.budget]}
        report["splits"][split] = res
    for name in report["splits"]["train"]["variants"]:
        tr, ho = report["splits"]["train"]["variants"][name], report["splits"]["heldout"]["variants"][name]
        rows_out.append({"fill": name, "train @10": tr["recall@10"],
                         f"train @{args.budget}": tr[f"recall@{args.budget}"],
                         f"train gain@{args.budget}": tr[f"gain@{args.budget}"], "held-out @10": ho["recall@10"],
                         f"held-out @{args.budget}": ho[f"recall@{args.budget}"],
                         f"held-out gain@{args.budget}": ho[f"gain@{args.budget}"]})
    print(table(rows_out, "Plan-mode multi-hop: what fills the budget after the planned names (evidence recall)"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
