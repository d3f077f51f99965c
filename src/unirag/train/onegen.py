"""Fine-tune a OneGen model (full or LoRA) with accelerate: one process by default, several GPUs or
nodes under ``accelerate launch``. Gradient accumulation, seeded shuffles, resumable checkpoints.

Configuration: :class:`OneGenTrainConfig` (YAML); entry point :func:`train_onegen`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unirag.config.base import ConfigBase
from unirag.onegen.config import OneGenConfig, default_onegen_dir
from unirag.train.common import LoraBase


def _lora_targets() -> list[str]:
    return ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings(LoraBase):
    """LoRA on the attention and MLP projections; the OneGen token rows (input and output) are
    trained in full."""

    target_modules: list[str] = field(default_factory=_lora_targets)


@dataclass
class OneGenTrainConfig(ConfigBase):
    """Everything a OneGen run needs. Paths are relative to the working directory.

    ``lora: null`` means full fine-tuning. ``max_steps: 0`` trains ``epochs`` full passes;
    ``max_minutes`` (0 = no limit) stops after the step that crosses the time budget, saves the model
    and a checkpoint there, so running the same recipe again goes on from that step. ``stop_at_step``
    (0 = off) stops the same way at a fixed step, keeping the schedule of ``max_steps``.
    ``token_learning_rate`` (0 = ``learning_rate``) is the rate of the new OneGen token rows under
    LoRA: they start far from any hidden state the model produces, so a higher rate lets the model
    learn to emit them within a short run.
    ``output_dir`` empty means the default model folder (``<cache>/onegen/smollm2-onegen``).
    """

    train_file: str
    docs_file: str
    eval_file: str = ""
    model: OneGenConfig = field(default_factory=OneGenConfig)
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    output_dir: str = ""
    checkpoint_dir: str = "runs/onegen/checkpoints"
    learning_rate: float = 2e-4
    token_learning_rate: float = 0.0
    weight_decay: float = 0.0
    warmup_steps: int = 10
    batch_size: int = 4
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int = 0
    max_minutes: float = 0.0
    stop_at_step: int = 0
    max_length: int = 512
    max_negatives: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 5
    save_every: int = 50
    resume: bool = True
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    threads: int = 0


def apply_lora(model: Any, settings: LoraSettings) -> None:
    """Wrap ``model.lm`` in a peft LoRA model whose new token rows are trainable (peft trainable
    tokens: only those rows are stored in the adapter, tied input/output embeddings stay tied)."""
    from peft import get_peft_model

    emb = model.lm.get_input_embeddings()
    emb_name = next(n for n, m in model.lm.named_modules() if m is emb).split(".")[-1]
    ids = sorted({model.token_id(t.role) for t in model.config.tokens})
    model.lm = get_peft_model(model.lm, settings.peft_config("CAUSAL_LM", trainable_token_indices={emb_name: ids}))


def build_model(cfg: OneGenTrainConfig) -> Any:
    """The base model with the OneGen tokens, LoRA-wrapped when ``cfg.lora`` is set."""
    from unirag.onegen.model import OneGenModel

    model = OneGenModel.from_base(cfg.model)
    if cfg.lora is not None:
        apply_lora(model, cfg.lora)
    return model


def encode_file(path: str, model: Any, docs: dict[str, str], max_length: int) -> list[Any]:
    """Validate and tokenise a OneGen JSONL file against ``docs``."""
    from unirag.onegen.collator import encode_example
    from unirag.onegen.data import load_examples

    examples = load_examples(path, model.config, docs)
    return [encode_example(ex, model.tokenizer, model.config, max_length, where=f"{path}:{ex.id}")
            for ex in examples]


def heldout_lm_loss(model: Any, encoded: list[Any], collator: Any, batch_size: int = 8) -> dict[str, float]:
    """Mean next-token loss on labelled positions of ``encoded`` examples: all, on ordinary text
    tokens only, and on the OneGen tokens only (no gradient)."""
    import torch

    special = torch.tensor(sorted({model.token_id(t.role) for t in model.config.tokens}))
    sums = {"all": 0.0, "text": 0.0, "special": 0.0}
    counts = dict.fromkeys(sums, 0)
    was = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(encoded), batch_size):
            batch = collator(encoded[s : s + batch_size])
            dev = model.device
            h = model.hidden_states(batch["input_ids"].to(dev), batch["attention_mask"].to(dev))
            losses, targets = model.token_losses(h, batch["labels"].to(dev))
            is_special = torch.isin(targets.cpu(), special)
            for key, sel in (("all", torch.ones_like(is_special)), ("text", ~is_special), ("special", is_special)):
                sums[key] += float(losses.cpu()[sel].sum())
                counts[key] += int(sel.sum())
    model.train(was)
    return {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums} | {
        f"n_{k}": counts[k] for k in counts}


def param_groups(model: Any, cfg: OneGenTrainConfig) -> list[dict[str, Any]]:
    """Optimiser groups: every trainable parameter at ``learning_rate``, except the LoRA model's
    OneGen token rows (peft trainable tokens), which get ``token_learning_rate`` when it is set."""
    tokens = [p for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    seen = {id(p) for p in tokens}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups = [{"params": rest, "lr": cfg.learning_rate}]
    if tokens:
        groups.append({"params": tokens, "lr": cfg.token_learning_rate or cfg.learning_rate})
    return groups


def _schedule(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))

    return fn


def train_onegen(cfg: OneGenTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train per ``cfg``; saves the final model (or adapter) with tokenizer and OneGen config into
    ``cfg.output_dir`` and returns a summary (losses, steps, timings, held-out LM loss)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from unirag.onegen.collator import OneGenCollator
    from unirag.onegen.data import load_documents
    from unirag.train.common import latest_checkpoint, load_checkpoint, save_checkpoint

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    say = acc.print if progress else (lambda *a, **k: None)
    model = build_model(cfg)
    docs = load_documents(cfg.docs_file)
    train = encode_file(cfg.train_file, model, docs, cfg.max_length)
    held = encode_file(cfg.eval_file, model, docs, cfg.max_length) if cfg.eval_file else []
    collator = OneGenCollator(model.tokenizer, cfg.model, docs, cfg.max_negatives)
    summary: dict[str, Any] = {"train_examples": len(train), "heldout_examples": len(held)}
    if held:
        summary["heldout_lm_before"] = heldout_lm_loss(model, held, collator)
        say(f"held-out LM loss before: {json.dumps(summary['heldout_lm_before'])}")
    params = [p for p in model.parameters() if p.requires_grad]
    summary["trainable_params"] = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(train) / (cfg.batch_size * acc.num_processes) / cfg.grad_accum)
    total = cfg.max_steps or per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.warmup_steps, total))
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    ckroot = Path(cfg.checkpoint_dir)
    state = {"step": 0, "epoch": 0, "batches_done": 0}
    last = latest_checkpoint(ckroot) if cfg.resume else None
    if last is not None:
        state = load_checkpoint(last, acc.unwrap_model(model), optimizer, scheduler)
        say(f"resumed from {last} (step {state['step']})")
    log_path = ckroot / "log.jsonl"
    if acc.is_main_process:
        ckroot.mkdir(parents=True, exist_ok=True)
    model.train()
    start = time.time()
    t0, window = time.time(), {"loss": 0.0, "lm": 0.0, "ret": 0.0, "n": 0}
    step, stopped = state["step"], False  # stopped: by the time budget (a checkpoint lets a rerun go on)
    if cfg.stop_at_step and step >= cfg.stop_at_step:
        total = step
    while step < total:
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(cfg.seed + epoch)
        loader = acc.prepare(DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                                        collate_fn=collator))
        loader = acc.skip_first_batches(loader, state["batches_done"]) if state["batches_done"] else loader
        for batch in loader:
            with acc.accumulate(model):
                out = model(batch)
                acc.backward(out.loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_done"] += 1
            window["loss"] += float(out.loss.detach())
            window["lm"] += float(out.lm_loss)
            window["ret"] += float(out.retrieval_loss)
            window["n"] += 1
            if not acc.sync_gradients:
                continue
            step += 1
            state["step"] = step
            if cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes:
                say(f"time budget of {cfg.max_minutes} min reached at step {step}")
                total, stopped = step, True
            if cfg.stop_at_step and step >= cfg.stop_at_step:
                total, stopped = step, True
            if step % cfg.log_every == 0 or step == total:
                n = max(1, window["n"])
                rec = {"step": step, "epoch": epoch, "loss": window["loss"] / n, "lm_loss": window["lm"] / n,
                       "retrieval_loss": window["ret"] / n, "lr": scheduler.get_last_lr()[0],
                       "sec_per_step": (time.time() - t0) / (n / cfg.grad_accum)}
                say(json.dumps(rec))
                if acc.is_main_process:
                    with open(log_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(rec) + "\n")
                summary["last_log"] = rec
                t0, window = time.time(), {"loss": 0.0, "lm": 0.0, "ret": 0.0, "n": 0}
            if stopped or (cfg.save_every and step % cfg.save_every == 0 and step < total):
                acc.wait_for_everyone()
                if acc.is_main_process:
                    save_checkpoint(ckroot / f"step-{step}", acc.unwrap_model(model), optimizer, scheduler, state)
            if step >= total:
                break
        if step < total or state["batches_done"] >= len(loader):
            state["epoch"] += 1
            state["batches_done"] = 0
    acc.wait_for_everyone()
    unwrapped = acc.unwrap_model(model)
    summary["steps"] = step
    summary["train_minutes"] = (time.time() - start) / 60
    if held:
        summary["heldout_lm_after"] = heldout_lm_loss(unwrapped, held, collator)
        say(f"held-out LM loss after: {json.dumps(summary['heldout_lm_after'])}")
    out_dir = Path(cfg.output_dir) if cfg.output_dir else default_onegen_dir()
    if acc.is_main_process:
        unwrapped.save_pretrained(out_dir)
        (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["output_dir"] = str(out_dir)
    return summary
