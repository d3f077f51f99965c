"""Prompt probe: candidate prompt styles for one generator on a seeded subset of the held-out
FanOutQA single-hop questions (dense top-k over the default index, greedy), scored like the
harness (EM / F1 on the short answer), plus the abstention and citation rates. Used to pick each
family's style in :mod:`unirag.pipeline.prompt`; results go to bench/results/prompt-probe-<gen>.json.

    python bench/probe_prompts.py --generator qwen2.5-coder-0.5b-instruct --n 24
    python bench/probe_prompts.py --generator smollm2-135m-instruct --n 40 --candidates default,llama,plain
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unirag.outputs import ABSTAIN  # noqa: E402
from unirag.pipeline.prompt import STYLES, PromptStyle  # noqa: E402

CANDIDATES: dict[str, PromptStyle] = {
    **STYLES,
    # the plain question-and-passages prompt: no citation or abstention instructions
    "plain": PromptStyle("plain", "", "{passages}\n\nQuestion: {question}\nAnswer with a short phrase.",
                         first_line=True),
    "cite-after": PromptStyle(
        "cite-after", "You are a helpful assistant.",
        "{passages}\n\nUsing the passages above, answer the question in a few words and cite the passage "
        "you used, e.g. \"Alexander Fleming [1]\". If the passages do not say, reply \"" + ABSTAIN + "\"\n\n"
        "Question: {question}", first_line=True),
    "sentence": PromptStyle(
        "sentence", "You are a helpful assistant.",
        "Passages:\n{passages}\n\nAnswer the question in one short sentence that cites the passage it uses, "
        "e.g. \"Penicillin was discovered by Alexander Fleming [1].\" If the passages do not contain the answer, "
        "reply: " + ABSTAIN + "\n\nQuestion: {question}", first_line=True),
    "fields": PromptStyle(
        "fields", "You are a helpful assistant.",
        "Passages:\n{passages}\n\nQuestion: {question}\n\nAnswer the question from the passages. Reply in exactly "
        "this form:\nAnswer: <the answer in a few words>\nSource: [<number of the passage that says it>]\n"
        "If the passages do not contain the answer, reply: Answer: " + ABSTAIN),
    "fields-sys": PromptStyle(
        "fields-sys", "You answer questions from numbered passages. Reply in exactly this form:\n"
        "Answer: <the answer in a few words>\nSource: [<number of the passage that says it>]\n"
        "If the passages do not contain the answer, reply: Answer: " + ABSTAIN,
        "Passages:\n{passages}\n\nQuestion: {question}"),
    "plain-cite": PromptStyle(
        "plain-cite", "", "{passages}\n\nQuestion: {question}\nAnswer with a short phrase, then the number of the "
        "passage that says it in brackets, like [2].", first_line=True),
    "plain-cite-abstain": PromptStyle(
        "plain-cite-abstain", "", "{passages}\n\nQuestion: {question}\nAnswer with a short phrase, then the number "
        "of the passage that says it in brackets, like [2]. If no passage says it, answer: " + ABSTAIN,
        first_line=True),
    "cite-first": PromptStyle(
        "cite-first", "You are a helpful assistant.",
        "{passages}\n\nQuestion: {question}\n\nFind the passage that answers the question. Reply with its number in "
        "brackets, then the answer in a few words, like: [2] the answer. If no passage answers it, reply: " + ABSTAIN,
        first_line=True),
    # qwen2 without a worked example: the example's answer ("Alexander Fleming [1]") was copied
    # into answers of unrelated questions
    "qwen2-form": PromptStyle(
        "qwen2-form", "You are a helpful assistant.",
        "Answer the question using only the numbered passages below.\n\n{passages}\n\n"
        "Question: {question}\n\n"
        "Reply with the short answer only (a name, date, number or short phrase), followed by the "
        "number of the passage it comes from in brackets: <answer> [<passage number>]. If the passages "
        "do not contain the answer, reply exactly: " + ABSTAIN, first_line=True),
    "plain-form": PromptStyle(
        "plain-form", "", "{passages}\n\nQuestion: {question}\nAnswer with a short phrase taken from the "
        "passages, then the passage number in brackets: <answer> [<passage number>]. If no passage says it, "
        "answer: " + ABSTAIN, first_line=True),
    # qwen2 with a worked example whose answer is no test question's (was "Alexander Fleming [1]")
    "qwen2-curie": PromptStyle(
        "qwen2-curie", "You are a helpful assistant.",
        "Answer the question using only the numbered passages below.\n\n{passages}\n\n"
        "Question: {question}\n\n"
        "Reply with the short answer only (a name, date, number or short phrase), followed by the "
        "number of the passage it comes from in brackets, like: Marie Curie [2]. If the passages "
        "do not contain the answer, reply exactly: " + ABSTAIN, first_line=True),
    "plain-abstain": PromptStyle(
        "plain-abstain", "", "{passages}\n\nQuestion: {question}\nAnswer with a short phrase. If the passages do "
        "not contain the answer, answer: " + ABSTAIN, first_line=True),
    "cite-first-q": PromptStyle(
        "cite-first-q", "You are a helpful assistant.",
        "Question: {question}\n\nPassages:\n{passages}\n\nQuestion: {question}\nReply with the number of the passage "
        "that answers the question in brackets, then a short answer (a few words), like: [2] the answer. "
        "If no passage answers it, reply: " + ABSTAIN, first_line=True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--candidates", default="default,qwen2,plain,cite-after,sentence")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="probe", help="suffix of the results file")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import unirag
    from unirag.data import load_qa_set
    from unirag.eval.harness import score_answers

    items = sorted(random.Random(args.seed).sample(load_qa_set("fanoutqa-single"), args.n), key=lambda it: it.id)
    rag = unirag.RAG.load(engine="pipeline", generator=args.generator, k=args.k, progress=False)
    if args.dtype:
        rag.engine.generator.model.to(getattr(torch, args.dtype))
    params = unirag.SamplingParams(max_new_tokens=args.max_new_tokens)
    report = {"generator": args.generator, "n": args.n, "seed": args.seed, "k": args.k, "results": {}}
    for name in args.candidates.split(","):
        STYLES[f"probe-{name}"] = CANDIDATES[name]
        rag.engine.config.prompt_style = f"probe-{name}"
        t = time.perf_counter()
        answers = rag.ask_batch([it.question for it in items], params, batch_size=8)
        secs = time.perf_counter() - t
        m = score_answers(items, answers)
        row = {"em": m["em"], "f1": m["f1"], "abstain": 100 * sum(a.abstained for a in answers) / len(answers),
               "cited": 100 * sum(bool(a.cited) for a in answers) / len(answers), "s_per_q": secs / len(items),
               "tokens": m["completion_tokens"],
               "examples": [[it.question, it.answers, a.text] for it, a in zip(items[:8], answers[:8])]}
        report["results"][name] = row
        print(name, {k: round(v, 1) for k, v in row.items() if k != "examples"}, flush=True)
        for q, g, txt in row["examples"]:
            print(f"   {q[:70]!r} gold={g} -> {txt[:100]!r}", flush=True)
    out = Path("bench/results") / f"prompt-probe-{args.generator.split('-')[0]}-{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
