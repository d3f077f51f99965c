"""Reader benchmark: SmolLM2-135M vs Qwen2.5-Coder-0.5B as the pipeline's generator.

Same retriever (dense all-MiniLM-L6-v2 over the default Wikipedia index), same k (3), greedy,
on the held-out FanOutQA single-hop questions (``fanoutqa-single``, 160), each generator with
its own prompt style (:mod:`unirag.pipeline.prompt`). Reports, per generator:

- EM / F1 (harness scoring, :func:`unirag.eval.harness.score_answers`) on all questions and on
  the *clean reader* subset (the gold answer string appears in the evidence passage's text);
- abstention rate on the normal index (the cost of abstaining) and on an index from which the
  questions' evidence pages were removed (higher is better there), EM there;
- latency: the batched run's per-question share (p50/p95), and true single-question latency
  (batch size 1, p50/p95) on the first ``--latency-n`` questions, which is what ``unirag ask``
  users wait;
- cited-source rate (answers with at least one valid ``[n]``) and whether the first cited
  source is the evidence page.

Usage (one thread, as on a busy 2-core machine):

    python bench/bench_reader.py                       # all 160, both generators
    python bench/bench_reader.py --n 64 --seed 0       # a fixed seeded subset
    python bench/bench_reader.py --dtype-check         # fp32 vs bf16 decode speed of Qwen
    python bench/bench_reader.py --style qwen2.5-coder-0.5b-instruct=default   # another prompt

Writes ``bench/results/reader.json`` (``--out``) and per-question predictions beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GENERATORS = "smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct"


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.lower()).strip()


def removed_index(default_index: Path, ids: list[str]) -> Path:
    """A copy of the default index without ``ids`` (stored vectors reused, nothing embedded), cached."""
    import hashlib
    import shutil

    from unirag.config.paths import cache_dir
    from unirag.index.folder import IndexFolder
    from unirag.retrieval.update import update_index

    tag = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]
    path = cache_dir() / "indexes" / f"bench-reader-removed-{tag}"
    if not IndexFolder(path).exists():
        tmp = path.with_name(path.name + ".copy")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(default_index, tmp)
        update_index(tmp, None, delete=ids, missing_ok=True)
        os.replace(tmp, path)
    return path


def dtype_check(n: int = 3, max_new_tokens: int = 32) -> dict:
    """Seconds per answer of Qwen (prompt of 3 passages) loaded as float32 and as bfloat16."""
    import torch

    import unirag
    from unirag.data import load_qa_set

    items = load_qa_set("fanoutqa-single")[:n]
    out = {}
    rag = unirag.RAG.load(engine="pipeline", generator="qwen2.5-coder-0.5b-instruct", k=3, progress=False)
    params = unirag.SamplingParams(max_new_tokens=max_new_tokens, stop=[])
    for dt in ("float32", "bfloat16"):
        rag.engine.generator.model.to(getattr(torch, dt))
        rag.ask(items[0].question, unirag.SamplingParams(max_new_tokens=2))  # warm-up
        secs, toks, texts = [], [], []
        for it in items:
            t = time.perf_counter()
            a = rag.ask(it.question, params)
            secs.append(time.perf_counter() - t)
            toks.append(a.usage.completion_tokens)
            texts.append(a.text)
        out[dt] = {"seconds_per_answer": sum(secs) / n, "completion_tokens": sum(toks) / n, "texts": texts}
        print(dt, out[dt], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generators", default=GENERATORS)
    ap.add_argument("--n", type=int, default=160, help="questions (a seeded subset when < 160)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--latency-n", type=int, default=8, help="questions asked one at a time for true latency")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--style", action="append", default=[], help="GENERATOR=STYLE prompt style override")
    ap.add_argument("--no-removed", action="store_true", help="skip the evidence-removed index")
    ap.add_argument("--dtype-check", action="store_true", help="only time Qwen in float32 vs bfloat16")
    ap.add_argument("--merge", nargs="+", help="only merge these reports (same questions) into --out and print")
    ap.add_argument("--out", default="bench/results/reader.json")
    args = ap.parse_args()
    if args.merge:
        reports = [json.loads(Path(p).read_text()) for p in args.merge]
        merged = dict(reports[0], generators={}, commands=[r["command"] for r in reports])
        for r in reports:
            assert (r["n"], r["seed"], r["k"]) == (merged["n"], merged["seed"], merged["k"]), "different questions"
            merged["generators"].update(r["generators"])
        Path(args.out).write_text(json.dumps(merged, indent=2) + "\n")
        print_table(merged)
        return

    import torch

    torch.set_num_threads(args.threads)
    if args.dtype_check:
        res = dtype_check()
        Path(args.out).with_name("reader-dtype.json").write_text(json.dumps(res, indent=2) + "\n")
        return

    import unirag
    from unirag.data import load_qa_set
    from unirag.eval.harness import score_answers
    from unirag.eval.qa import exact_match
    from unirag.retrieval import ensure_default_index
    from unirag.retrieval.loader import load_retriever

    items = load_qa_set("fanoutqa-single")
    if args.n < len(items):
        items = sorted(random.Random(args.seed).sample(items, args.n), key=lambda it: it.id)
    index = ensure_default_index(progress=False)
    store = load_retriever(index, "dense").store
    evidence_text = {pid: store.get(pid) for it in items for pid in it.evidence if pid in store}
    clean = [i for i, it in enumerate(items)
             if any(_norm(a) and _norm(a) in _norm(evidence_text[p].title + ". " + evidence_text[p].text)
                    for a in it.answers for p in it.evidence if p in evidence_text)]
    gone = sorted({p for it in items for p in it.evidence if p in evidence_text})
    removed = None if args.no_removed else removed_index(index, gone)
    styles = dict(s.split("=", 1) for s in args.style)
    params = unirag.SamplingParams(max_new_tokens=args.max_new_tokens)
    out_dir = Path(args.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"set": "fanoutqa-single", "n": len(items), "seed": args.seed if args.n < 160 else None,
                    "k": args.k, "retriever": "dense", "max_new_tokens": args.max_new_tokens, "greedy": True,
                    "batch_size": args.batch_size, "threads": args.threads, "n_clean": len(clean),
                    "evidence_removed": len(gone), "machine": f"{os.cpu_count()} cores, shared",
                    "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]), "generators": {}}

    def run(rag, qs, bs):
        t = time.perf_counter()
        ans = rag.ask_batch(qs, params, batch_size=bs)
        return ans, time.perf_counter() - t

    for name in [g.strip() for g in args.generators.split(",") if g.strip()]:
        t0 = time.perf_counter()
        rag = unirag.RAG.load(index, engine="pipeline", generator=name, k=args.k, progress=False)
        load_s = time.perf_counter() - t0
        if name in styles:
            rag.engine.config.prompt_style = styles[name]
        from unirag.pipeline.prompt import style_for

        style = style_for(rag.engine.generator, rag.engine.config.prompt_style).name
        print(f"[{name}] loaded in {load_s:.1f} s, style {style}", flush=True)
        answers, secs = [], 0.0
        for s in range(0, len(items), args.batch_size):
            a, dt = run(rag, [it.question for it in items[s : s + args.batch_size]], args.batch_size)
            answers += a
            secs += dt
            print(f"[{name}] {len(answers)}/{len(items)} {secs:.0f} s", flush=True)
        m = score_answers(items, answers)
        mc = score_answers([items[i] for i in clean], [answers[i] for i in clean])
        cited = [a for a in answers if a.cited]
        first_ok = sum(a.sources[a.cited[0] - 1].id in it.evidence for a, it in zip(answers, items) if a.cited)
        row = {"style": style, "load_seconds": load_s, "em": m["em"], "f1": m["f1"],
               "clean_em": mc["em"], "clean_f1": mc["f1"], "evidence_recall": m["evidence_recall"],
               "batched_latency_p50": m["latency_p50"], "batched_latency_p95": m["latency_p95"],
               "seconds_per_question": secs / len(items), "completion_tokens": m["completion_tokens"],
               "abstain_rate": 100.0 * sum(a.abstained for a in answers) / len(answers),
               "cited_rate": 100.0 * len(cited) / len(answers),
               "first_cited_is_evidence": 100.0 * first_ok / max(1, len(cited))}
        # true single-question latency: what a user of `unirag ask` waits
        lat = []
        for it in items[: args.latency_n]:
            a, dt = run(rag, [it.question], 1)
            lat.append(dt)
        import numpy as np

        row["latency_p50"] = float(np.percentile(lat, 50)) if lat else None
        row["latency_p95"] = float(np.percentile(lat, 95)) if lat else None
        row["latency_n"] = len(lat)
        preds = [{"id": it.id, "question": it.question, "gold": it.answers, "evidence": it.evidence,
                  "clean": i in clean, "text": a.text, "short": a.short, "cited": a.cited, "abstained": a.abstained,
                  "sources": a.source_ids, "em": exact_match(a.short or a.text, it.answers)}
                 for i, (it, a) in enumerate(zip(items, answers))]
        if removed is not None:
            rag.swap_index(str(removed))
            rem = []
            for s in range(0, len(items), args.batch_size):
                rem += run(rag, [it.question for it in items[s : s + args.batch_size]], args.batch_size)[0]
                print(f"[{name}] removed {len(rem)}/{len(items)}", flush=True)
            mr = score_answers(items, rem)
            row["removed_abstain_rate"] = 100.0 * sum(a.abstained for a in rem) / len(rem)
            row["removed_em"] = mr["em"]
            for p, a in zip(preds, rem):
                p["removed_text"], p["removed_abstained"] = a.text, a.abstained
        report["generators"][name] = row
        tag = name.split("-")[0] + (f"-{styles[name]}" if name in styles else "")
        with open(out_dir / f"reader-{tag}-predictions.jsonl", "w") as fh:
            fh.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in preds)
        print(json.dumps({name: row}, indent=1), flush=True)
        del rag
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    print_table(report)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


def print_table(report: dict) -> None:
    """The report as a text table, one row per generator."""
    cols = [("EM", "em"), ("F1", "f1"), ("clean EM", "clean_em"), ("clean F1", "clean_f1"),
            ("abstain", "abstain_rate"), ("abstain (removed)", "removed_abstain_rate"), ("EM (removed)", "removed_em"),
            ("cited", "cited_rate"), ("p50 s", "latency_p50"), ("p95 s", "latency_p95"),
            ("batched s/q", "seconds_per_question")]
    print(f"\nfanoutqa-single n={report['n']} (clean {report['n_clean']}), dense k={report['k']}, greedy, "
          f"{report['max_new_tokens']} new tokens, {report['threads']} thread(s)")
    print(f"{'generator':30s}" + "".join(f"{c:>12s}" for c, _ in cols))
    for name, row in report["generators"].items():
        vals = [row.get(k) for _, k in cols]
        print(f"{name:30s}" + "".join(f"{v:12.1f}" if v is not None else f"{'-':>12s}" for v in vals))


if __name__ == "__main__":
    main()
