"""Peak memory and step time of the OneGen training step against two baselines, same batch.

* ``onegen``: our step: dynamic padding, each distinct document once, no LM head on document rows,
  cross-entropy only at labelled positions.
* ``naive``: the reference recipe: every row (generation rows and one document row per
  retrieval-document pair, duplicates included) padded to ``max_length``; fp32 logits for every
  position of every row; the same losses.
* ``plain``: ordinary causal-LM fine-tuning on the same tokens (generation rows with their labels,
  document rows as LM rows), transformers' own loss, dynamic padding.

Each (variant, repeat) runs in a fresh subprocess, interleaved: peak RSS growth during one
forward+backward+AdamW step (``ru_maxrss`` minus the RSS before the step) and the median time of
the following steps. Prints a table and writes ``bench/results/onegen_train.json``.

    python bench/bench_onegen_train.py            # SmolLM2-135M + LoRA, 4 examples of the real set
    python bench/bench_onegen_train.py --quick    # tiny random Llama, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _setup(a):
    import torch

    from unirag.onegen.collator import OneGenCollator, encode_example
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.data import load_documents, load_examples
    from unirag.onegen.model import OneGenModel
    from unirag.train.onegen import LoraSettings, apply_lora

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    cfg = OneGenConfig(base_model=a.model, max_doc_tokens=a.doc_tokens, loss="infonce")
    model = OneGenModel.from_base(cfg)
    if a.lora:
        apply_lora(model, LoraSettings())
    docs = load_documents(a.docs)
    exs = load_examples(a.data, cfg, docs)[a.offset : a.offset + a.batch]
    rows = [encode_example(e, model.tokenizer, cfg, a.max_length) for e in exs]
    batch = OneGenCollator(model.tokenizer, cfg, docs, max_negatives=1)(rows)
    model.train()
    return model, rows, batch


def _naive_loss(model, rows, batch, max_length):
    """Reference-style step: fixed-length rows, full fp32 logits everywhere, duplicated documents."""
    import torch
    import torch.nn.functional as F

    from unirag.onegen.losses import contrastive_loss

    pad = model.tokenizer.pad_token_id
    n = len(rows)

    def fixed(seqs):
        ids = torch.full((len(seqs), max_length), pad)
        mask = torch.zeros((len(seqs), max_length), dtype=torch.long)
        for i, s in enumerate(seqs):
            s = s[:max_length]
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask

    gen_ids, gen_mask = fixed([r.input_ids for r in rows])
    labels = torch.full((n, max_length), -100)
    for i, r in enumerate(rows):
        labels[i, : len(r.labels)] = torch.tensor(r.labels[:max_length])
    pos_mask, neg_mask = batch["pos_mask"], batch["neg_mask"]
    pairs = [(r, d) for r in range(pos_mask.shape[0]) for d in range(pos_mask.shape[1]) if pos_mask[r, d] or neg_mask[r, d]]
    doc_seqs = [batch["doc_input_ids"][d][batch["doc_attention_mask"][d].bool()].tolist() for _, d in pairs]
    doc_ids, doc_mask = fixed(doc_seqs)
    ids = torch.cat([gen_ids, doc_ids])
    mask = torch.cat([gen_mask, doc_mask])
    out = model.lm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    logits = out.logits.float()  # [rows, max_length, vocab] for every row, documents included
    lm = F.cross_entropy(logits[:n, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    h = out.hidden_states[-1]
    q = F.normalize(h[batch["ret_rows"], batch["ret_pos"]], dim=-1)
    last = doc_mask.sum(1) - 1
    dv = F.normalize(h[n + torch.arange(len(pairs)), last], dim=-1)
    pm = torch.zeros(len(q), len(pairs), dtype=torch.bool)
    nm = torch.zeros_like(pm)
    for k, (r, d) in enumerate(pairs):
        pm[r, k], nm[r, k] = bool(pos_mask[r, d]), bool(neg_mask[r, d])
    return lm + contrastive_loss(q, dv, pm, nm, torch.ones_like(pm), kind="infonce")


def _plain_loss(model, rows, batch):
    """Plain causal-LM fine-tuning on the same tokens (transformers computes full logits)."""
    dl = batch["doc_input_ids"].masked_fill(batch["doc_attention_mask"] == 0, -100)
    a = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    b = model.lm(input_ids=batch["doc_input_ids"], attention_mask=batch["doc_attention_mask"], labels=dl).loss
    return a + b


def worker(a) -> dict:
    """One subprocess: peak RSS growth of the first step, then the median time of ``a.steps`` steps."""
    import torch

    model, rows, batch = _setup(a)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        if a.variant == "onegen":
            loss = model(batch).loss
        elif a.variant == "naive":
            loss = _naive_loss(model, rows, batch, a.max_length)
        else:
            loss = _plain_loss(model, rows, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    before = _rss_kb()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    tokens = int(batch["attention_mask"].sum() + batch["doc_attention_mask"].sum())
    return {"variant": a.variant, "peak_mb": (peak - before) / 1024, "step_s": statistics.median(times),
            "tokens": tokens, "rows": len(rows), "documents": int(batch["doc_input_ids"].shape[0])}


def _report(a, runs: dict[str, list[dict]], final: bool) -> None:
    """Medians over the repeats done so far; written after every repeat, printed at the end."""
    med = {v: {"peak_mb": statistics.median(r["peak_mb"] for r in rs), "step_s": statistics.median(r["step_s"] for r in rs)}
           for v, rs in runs.items()}
    summary = {
        "memory_onegen_over_naive": med["onegen"]["peak_mb"] / med["naive"]["peak_mb"],
        "time_onegen_over_plain": med["onegen"]["step_s"] / med["plain"]["step_s"],
        "time_onegen_over_naive": med["onegen"]["step_s"] / med["naive"]["step_s"],
        "repeats_done": len(runs["plain"]),
    }
    setup = {k: v for k, v in vars(a).items() if k != "variant"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(
        {"setup": setup, "medians": med, "summary": summary, "runs": runs,
         "batch": {k: runs["onegen"][0][k] for k in ("tokens", "rows", "documents")}}, indent=2) + "\n")
    if final:
        print(f"\n{'variant':8s} {'peak MB (median)':>17s} {'step s (median)':>16s}")
        for v, m in med.items():
            print(f"{v:8s} {m['peak_mb']:17.1f} {m['step_s']:16.2f}")
        print(json.dumps(summary, indent=1))


def _quick_data(tmp: Path) -> tuple[str, str, str]:
    """Tiny model folder + data for a smoke run (no pretrained weights)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.onegen.helpers import DOCS, example_rows, make_llama, make_tokenizer

    from unirag.onegen.data import write_documents

    tok = make_tokenizer()
    make_llama(len(tok)).save_pretrained(tmp / "m")
    tok.save_pretrained(tmp / "m")
    (tmp / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in example_rows()))
    write_documents({k: (k, v) for k, v in DOCS.items()}, tmp / "d.jsonl")
    return str(tmp / "m"), str(tmp / "t.jsonl"), str(tmp / "d.jsonl")


def main() -> None:
    """Run interleaved subprocesses, print a table, write the JSON."""
    ap = argparse.ArgumentParser(description="OneGen training step: memory and time vs naive and plain SFT")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default="runs/onegen/data/train.jsonl")
    ap.add_argument("--docs", default="runs/onegen/data/docs.jsonl")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=320)
    ap.add_argument("--doc-tokens", type=int, default=32)
    ap.add_argument("--lora", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default="onegen_train")
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.variant:
        print(json.dumps(worker(a)))
        return
    if a.quick:
        import tempfile

        tmp = Path(tempfile.mkdtemp())
        a.model, a.data, a.docs = _quick_data(tmp)
        a.max_length, a.doc_tokens, a.name = 128, 24, a.name + "_quick"
    runs: dict[str, list[dict]] = {"onegen": [], "naive": [], "plain": []}
    for rep in range(a.repeats):
        for variant in runs:
            cmd = [sys.executable, __file__, "--variant", variant] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                if k not in ("variant", "quick", "repeats") and v is not None]
            out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs[variant].append(res)
            print(f"repeat {rep + 1}/{a.repeats} {variant:7s} peak {res['peak_mb']:8.1f} MB  step {res['step_s']:7.2f} s",
                  flush=True)
        _report(a, runs, final=rep == a.repeats - 1)


if __name__ == "__main__":
    main()
