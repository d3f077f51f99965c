"""Other ways to pick the searches of multi-hop retrieval, against single-shot and the gold oracle.

Retrieval only: evidence recall@10/@20 (share of a question's corpus-present evidence pages among
the passages read) on the held-out FanOutQA top-level questions with corpus evidence; default index,
dense retriever. Hop 0 is always the question; each later search adds ``per_hop`` passages not read
yet until the budget; whatever budget is left is filled from the single-shot ranking.

- ``expand:<how>`` (no reader; pseudo-relevance feedback): each passage read so far, in order, gives
  the next query: ``q+title`` (question + its title), ``title``, ``q+lead`` (question + its first
  30 words);
- ``plan:<prompt>`` (self-ask / least-to-most style): the reader writes its whole plan in one
  generation, ``entities`` (the articles needed, one per line) or ``subq`` (simple sub-questions),
  and each line is searched.

The pipeline's own loop (one follow-up per hop) is bench/bench_multihop.py; gold sub-questions are
bench/multihop_oracle.py.

    python bench/multihop_plans.py --generators smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, table  # noqa: E402

EXPAND = {
    "q+title": lambda q, p: f"{q} {p.title}",
    "title": lambda q, p: p.title,
    "q+lead": lambda q, p: f"{q} {' '.join(p.text.split()[:30])}",
}
PLANS = {
    "entities": ("You list what must be looked up to answer a question.",
                 "Question: {q}\n\nList the people, places, works or things whose encyclopedia articles are needed "
                 "to answer this question, one name per line, at most 8. Reply with the names only."),
    "subq": ("You break questions into simple search questions.",
             "Question: {q}\n\nWrite the simple questions that must be searched to answer it, one per line, at "
             "most 8. Name the specific people, places or things in each."),
}


def recall(read: list[str], evidence: list[str]) -> float:
    return len(set(read) & set(evidence)) / len(set(evidence))


def read_with(retriever, first: list[str], queries, per_hop: int, budget: int) -> list[str]:
    """Hop 0's top ``per_hop``, then ``per_hop`` new passages per query (``queries(read)`` yields the
    next query given what was read), then the single-shot ranking ``first`` fills the budget."""
    read = list(first[:per_hop])
    for q in queries(read):
        if len(read) >= budget:
            break
        ids = retriever.search([q], per_hop + len(read)).ids[0]
        read += [x for x in ids if x not in read][: min(per_hop, budget - len(read))]
    read += [x for x in first if x not in read][: max(0, budget - len(read))]
    return read[:budget]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generators", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--per-hop", default="1,2,3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "multihop_plans.json"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    import unirag
    from unirag.data.qa import load_qa_set

    items = [it for it in load_qa_set("fanoutqa-multi") if it.evidence]
    per_hops = [int(x) for x in a.per_hop.split(",")]
    rows: list[dict] = []
    search = unirag.RAG.load(engine="pipeline", generator=None, progress=False).engine.retriever
    single = search.search([it.question for it in items], 40)
    rows = [{"method": "single-shot", "per hop": "-",
             **{f"recall@{b}": round(sum(recall(single.ids[i][:b], it.evidence) for i, it in enumerate(items))
                                    / len(items), 3) for b in (10, 20)}}]

    def expand_queries(q: str, how) -> object:
        def gen(read: list[str]):
            j = 0
            while j < len(read):
                yield how(q, search.store.get(read[j]))
                j += 1
        return gen

    for name, how in EXPAND.items():
        for ph in per_hops:
            rows.append({"method": f"expand:{name}", "per hop": ph, **{
                f"recall@{b}": round(sum(recall(read_with(search, single.ids[i], expand_queries(it.question, how),
                                                          ph, b), it.evidence)
                                         for i, it in enumerate(items)) / len(items), 3) for b in (10, 20)}})
    examples: dict = {}
    for gen_name in [g for g in a.generators.split(",") if g]:
        gen = unirag.RAG.load(engine="closed-book", generator=gen_name, progress=False).engine.generator
        for name, (system, user) in PLANS.items():
            t0 = time.perf_counter()
            outs = gen.generate_batch([gen.chat_prompt(user.format(q=it.question), system=system) for it in items],
                                      unirag.SamplingParams(max_new_tokens=80))
            secs = time.perf_counter() - t0
            plans = [[ln for ln in (x.strip(" -*•\t0123456789.)") for x in o.text.splitlines()) if ln and len(ln) < 200][:8]
                     for o in outs]
            examples[f"{gen_name}/{name}"] = [[it.question, p] for it, p in zip(items[:6], plans[:6])]
            for ph in per_hops:
                rows.append({"method": f"plan:{name} ({gen_name})", "per hop": ph, **{
                    f"recall@{b}": round(sum(recall(read_with(search, single.ids[i], lambda read, p=plans[i]: iter(p),
                                                              ph, b), it.evidence)
                                             for i, it in enumerate(items)) / len(items), 3) for b in (10, 20)},
                    "plan_s_per_q": round(secs / len(items), 2)})
            print(table(rows[-len(per_hops):], f"{gen_name} {name}"), flush=True)
    report = {"n_with_evidence": len(items), "rows": rows, "examples": examples,
              "command": " ".join(["python", *sys.argv])}
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows, f"fanoutqa-multi held-out, {len(items)} questions with corpus evidence"))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
