"""Joint RAG training (Lewis et al. 2020): query encoder + generator on (question, answer) pairs.

The document encoder and the index stay frozen; p(z|x) is recomputed in torch from the query
vector and the index's stored document vectors, so the marginal NLL trains the query encoder.
Checkpoints are safetensors + JSON (``unirag.train.common``); runs resume from the latest one.
Runs under ``accelerate launch --num_processes N`` as well: ``batch_size`` is the global batch, each
process takes its share (:mod:`unirag.train.dist`), and only the main process writes files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from unirag.config.base import ConfigBase
from unirag.rag.config import RagConfig
from unirag.train.common import LoraBase


@dataclass
class LoraSettings(LoraBase):
    """LoRA adapters for the generator (peft) on the query and value projections; ``enabled:
    false`` = full fine-tuning."""

    enabled: bool = True


@dataclass
class RagTrainConfig(ConfigBase):
    """Everything ``unirag train rag`` reads from its YAML file (``stop_after``: end this run early,
    keeping the schedule of ``max_steps``; a later run resumes). ``batch_size`` is the global batch:
    under ``accelerate launch --num_processes N`` each process takes ``batch_size / N`` of its
    questions; ``max_steps`` and the schedule count global steps, the same for any N."""

    output_dir: str
    rag: RagConfig = field(default_factory=RagConfig)
    train_data: str = "fanoutqa"
    dev_data: str | None = "fanoutqa"
    max_steps: int = 100
    stop_after: int | None = None
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 3e-4
    lr_query_encoder: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 5
    max_grad_norm: float = 1.0
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    log_every: int = 5
    save_every: int = 50
    resume: bool = True
    monitor_every: int = 25
    monitor_examples: int = 64
    collapse_entropy: float = 0.05
    freeze_retriever_on_collapse: bool = False
    eval_before: bool = True
    eval_after: bool = True
    eval_limit: int | None = None
    eval_decoding: str | None = None
    eval_num_beams: int = 2
    eval_batch_size: int = 8


@dataclass
class QAExample:
    """A question, its gold answers and (optionally) the ids of passages that support it."""

    question: str
    answers: list[str]
    gold: list[str] = field(default_factory=list)


def load_qa(source: str, split: str = "train") -> list[QAExample]:
    """``fanoutqa`` (the FanOutQA leaves whose evidence page is in the corpus; ``split`` = train or
    heldout of ``fanoutqa_split()``) or a JSONL file of ``question`` + ``answers``/``answer`` (+ ``gold``)."""
    if source == "fanoutqa":
        from unirag.data.fanoutqa import fanoutqa_qa

        return [QAExample(it.question, it.answers, it.evidence)
                for it in fanoutqa_qa("single", "train" if split == "train" else "heldout")]
    from unirag.corpus.jsonl import iter_jsonl
    from unirag.corpus.passage import CorpusError

    out = []
    for lineno, row in iter_jsonl(source):  # CorpusError naming the file for a missing file or bad JSON
        ans = row.get("answers", row.get("answer"))
        if "question" not in row or ans is None:
            raise CorpusError(f"{source}:{lineno}: needs 'question' and 'answers' (or 'answer')")
        gold = row.get("gold", [])
        out.append(QAExample(row["question"], [str(a) for a in ans] if isinstance(ans, list) else [str(ans)],
                             [gold] if isinstance(gold, str) else list(gold)))
    return out


def evaluate_qa(model, examples: list[QAExample], decoding: str | None = None, num_beams: int = 2,
                batch_size: int = 8) -> dict:
    """EM / F1 of the model's answers (and the answers themselves)."""
    from unirag.eval.qa import qa_scores

    preds = []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        res = model.generate([e.question for e in chunk], decoding=decoding, num_beams=num_beams, attribution=False)
        preds.extend(r.answer for r in res)
    scores = qa_scores(preds, [e.answers for e in examples])
    scores["predictions"] = [{"question": e.question, "gold": e.answers, "prediction": p}
                             for e, p in zip(examples, preds)]
    return scores


def retrieval_monitor(model, examples: list[QAExample]) -> dict[str, float]:
    """Recall@K of the gold passages and mean normalised entropy of p(z|x) on ``examples``."""
    import torch

    ex = [e for e in examples if e.gold]
    if not ex:
        return {}
    with torch.no_grad():
        ret = model.retrieve([e.question for e in ex])
    hits = sum(any(p.id in e.gold for p in ps) for e, ps in zip(ex, ret.passages))
    return {"dev_recall": hits / len(ex), "dev_doc_entropy": doc_entropy(ret.doc_scores)}


def doc_entropy(doc_scores) -> float:
    """Mean entropy of p(z|x) over the batch, divided by log K (1 = uniform, 0 = one document)."""
    p = doc_scores.float().softmax(-1)
    ent = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    return float(ent / math.log(max(doc_scores.shape[-1], 2)))


def apply_lora(model, lora: LoraSettings) -> None:
    """Wrap the generator with LoRA adapters (only they train)."""
    from peft import get_peft_model

    model.generator = get_peft_model(model.generator,
                                     lora.peft_config("SEQ_2_SEQ_LM" if model.is_seq2seq else "CAUSAL_LM"))


def train_rag(cfg: RagTrainConfig, model=None) -> dict:
    """Train, checkpoint, evaluate; returns the summary also written to ``output_dir/summary.json``."""
    import numpy as np
    import torch
    from accelerate.utils import set_seed

    from unirag.rag.model import RagModel
    from unirag.train.common import latest_checkpoint, load_checkpoint, save_checkpoint
    from unirag.train.dist import all_sum, local_share, make_accelerator

    acc = make_accelerator(cfg.grad_accum, cpu=not torch.cuda.is_available())
    main = acc.is_main_process
    out = Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "train_config.yaml")
    set_seed(cfg.seed)
    train = load_qa(cfg.train_data, "train")
    dev = load_qa(cfg.dev_data, "heldout") if cfg.dev_data else []
    if cfg.eval_limit is not None:
        dev = dev[: cfg.eval_limit]
    model = model or RagModel.from_config(cfg.rag)
    summary: dict = {"variant": cfg.rag.variant, "train_examples": len(train), "dev_examples": len(dev),
                     "num_processes": acc.num_processes}
    log = (out / "log.jsonl").open("a", encoding="utf-8") if main else None
    decoding = cfg.eval_decoding

    def write(rec: dict) -> None:
        if log is not None:
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)

    ckpt = latest_checkpoint(out / "checkpoints") if cfg.resume else None
    if cfg.eval_before and dev and ckpt is None and main:
        t0 = time.time()
        summary["before"] = evaluate_qa(model, dev, decoding, cfg.eval_num_beams, cfg.eval_batch_size)
        summary["before"]["seconds"] = time.time() - t0
        write({"eval": "before", "em": summary["before"]["em"], "f1": summary["before"]["f1"]})
    if cfg.lora.enabled:
        apply_lora(model, cfg.lora)
    else:
        model.generator.requires_grad_(True)
    q_params = [p for p in model.query_model.parameters() if p.requires_grad]
    g_params = [p for p in model.generator.parameters() if p.requires_grad]
    groups = [{"params": g_params, "lr": cfg.lr}] + ([{"params": q_params, "lr": cfg.lr_query_encoder}] if q_params else [])
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    warm = max(cfg.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (cfg.max_steps - s) / max(cfg.max_steps - warm, 1))))
    model, opt, sched = acc.prepare(model, opt, sched)
    raw = acc.unwrap_model(model)   # the model itself (DDP wraps it under several processes)
    step = 0
    if ckpt is not None:
        step = int(load_checkpoint(ckpt, raw, opt, sched)["step"])
        write({"resumed_from": str(ckpt), "step": step})
    per_epoch = max(len(train) // cfg.batch_size, 1)
    model.train()
    t0, hist = time.time(), []
    end = cfg.max_steps if cfg.stop_after is None else min(cfg.stop_after, cfg.max_steps)
    while step < end:
        epoch, pos = divmod(step, per_epoch)
        order = np.random.RandomState(cfg.seed + epoch).permutation(len(train))
        batch = [train[i] for i in order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]]
        mine, weight = local_share(acc, batch)
        with acc.accumulate(model):
            res = model([e.question for e in mine], [e.answers[0] for e in mine], reduction="sum")
            # sum over this share / global batch, times N (DDP averages): the global batch mean's gradient
            acc.backward(res.loss * (weight * acc.num_processes / len(batch)))
            if cfg.max_grad_norm:
                acc.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad()
        step += 1
        ent = doc_entropy(res.doc_scores.detach())
        rows = {r for rr in res.retrieved.rows for r in rr}
        hist.append(all_sum(acc, [float(res.loss.detach()) * weight])[0] / len(batch))
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            write({"step": step, "loss": sum(hist) / len(hist), "doc_entropy": ent,
                   "distinct_docs": len(rows) / max(sum(len(r) for r in res.retrieved.rows), 1),
                   "lr": sched.get_last_lr()[0], "sec_per_step": (time.time() - t0) / len(hist)})
            hist, t0 = [], time.time()
        if dev and cfg.monitor_every and step % cfg.monitor_every == 0:   # every process: same decision
            model.eval()
            mon = retrieval_monitor(raw, dev[: cfg.monitor_examples])
            model.train()
            collapsed = mon.get("dev_doc_entropy", 1.0) < cfg.collapse_entropy
            write({"step": step, **mon, "collapse": collapsed})
            if collapsed and cfg.freeze_retriever_on_collapse:
                raw.query_model.requires_grad_(False)
                write({"step": step, "retriever": "frozen after collapse warning"})
        if cfg.save_every and (step % cfg.save_every == 0 or step == end):
            acc.wait_for_everyone()
            if main:
                save_checkpoint(out / "checkpoints" / f"step-{step}", raw, opt, sched, {"step": step})
            acc.wait_for_everyone()
    model.eval()
    model = raw
    if not main:
        return {**summary, "steps": step}
    model.save_pretrained(out / "final")
    if cfg.eval_after and dev:
        t0 = time.time()
        summary["after"] = evaluate_qa(model, dev, decoding, cfg.eval_num_beams, cfg.eval_batch_size)
        summary["after"]["seconds"] = time.time() - t0
        write({"eval": "after", "em": summary["after"]["em"], "f1": summary["after"]["f1"]})
    if dev:
        summary["monitor_final"] = retrieval_monitor(model, dev[: cfg.monitor_examples])
    summary["steps"] = step
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.close()
    return summary
