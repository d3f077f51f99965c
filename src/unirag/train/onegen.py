"""Fine-tune a OneGen model (full or LoRA) with accelerate: one process by default, several processes
(CPU with gloo, GPUs with NCCL, several nodes) under ``accelerate launch``. Gradient accumulation,
seeded shuffles, resumable checkpoints; ``batch_size`` is the global micro-batch split across the
processes (see :mod:`unirag.train.dist`), so a config trains the same way with any process count.

Configuration: :class:`OneGenTrainConfig` (YAML); entry point :func:`train_onegen`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unirag.config.base import ConfigBase
from unirag.onegen.config import OneGenConfig, default_onegen_dir
from unirag.onegen.datasets import OneGenDataConfig
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
    ``data`` (the packaged set's :class:`~unirag.onegen.datasets.OneGenDataConfig`) makes the run
    build its data first when ``train_file``'s folder lacks it or holds data built otherwise, so one
    config and one command rebuild a model from the packages.

    ``batch_size`` is the global micro-batch: under ``accelerate launch --num_processes N`` each
    process takes ``batch_size / N`` of its examples, and an optimizer step sees ``batch_size *
    grad_accum`` examples whatever N is; steps, warm-up and the schedule count optimizer steps.
    ``gather_negatives`` gathers the query and document vectors of every process (with gradients)
    so that each query is scored against the documents of the whole global batch, as in one
    process; off, each process's queries see only its own share's documents.
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
    gather_negatives: bool = False
    data: OneGenDataConfig | None = None


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


def ensure_data(cfg: OneGenTrainConfig, say: Any = print) -> bool:
    """Build the packaged data of ``cfg.data`` into ``train_file``'s folder unless that folder already
    holds it (same settings in its ``data_summary.json``); returns whether it built. The three files
    must share the folder."""
    from unirag.onegen.datasets import build_onegen_data

    if cfg.data is None:
        return False
    folder = Path(cfg.train_file).parent
    names = {Path(cfg.train_file).name: "train.jsonl", Path(cfg.docs_file).name: "docs.jsonl"}
    if cfg.eval_file:
        names[Path(cfg.eval_file).name] = "heldout.jsonl"
    if any(Path(f).parent != folder for f in (cfg.docs_file, cfg.eval_file or cfg.train_file)) or \
            any(k != v for k, v in names.items()):
        from unirag.config.base import ConfigError

        raise ConfigError("with 'data', train_file, docs_file and eval_file must be train.jsonl, docs.jsonl and "
                          f"heldout.jsonl of one folder (got {cfg.train_file}, {cfg.docs_file}, {cfg.eval_file})")
    summary = folder / "data_summary.json"
    want = cfg.data.to_dict()
    if summary.is_file() and (folder / "train.jsonl").is_file():
        try:
            if json.loads(summary.read_text()).get("data") == want:
                return False
        except ValueError:
            pass
    say(f"building the training data in {folder} ...")
    build_onegen_data(folder, cfg.data, cfg.model)
    return True


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


def epoch_order(n: int, seed: int) -> list[int]:
    """The example order of an epoch: a function of the seed and the epoch alone, not of the process
    count. It is the order a shuffling ``DataLoader`` with ``generator=torch.Generator().manual_seed(seed)``
    yields (the loader draws its worker base seed from the generator before the sampler's permutation)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    torch.empty((), dtype=torch.int64).random_(generator=gen)
    return torch.randperm(n, generator=gen).tolist()


def _n_targets(ex: Any) -> int:
    """Labelled next-token targets of an encoded example (the positions ``lm_loss`` averages over)."""
    return sum(1 for t in ex.labels[1:] if t != -100)


def _budget_over(acc: Any, over: bool) -> bool:
    """The time budget is over when it is over on any process (all processes stop at one step)."""
    from unirag.train.dist import all_sum

    return all_sum(acc, [float(over)])[0] > 0


def gathered_contrastive_loss(out: Any, batch: dict[str, Any], kind: str, temperature: float, dim: int,
                              include: bool = True) -> Any:
    """The contrastive loss of the whole global batch, on every process: the query and document
    vectors of all processes are all-gathered with gradients, documents that several processes hold
    are kept once (first holder), and the masks are rebuilt over the global documents exactly as the
    collator builds them for one batch (``cand``: every document of the query's partner role).
    ``dim``: the vector width; ``include=False``: this process contributes no rows (a weight-0 share)."""
    import torch
    from accelerate.utils import gather_object

    from unirag.onegen.losses import contrastive_loss
    from unirag.train.dist import gather_rows

    q, d = out.query_vectors, out.doc_vectors
    keys = list(batch["doc_keys"]) if include and q is not None else []
    masks = ([m.cpu().tolist() for m in (batch["pos_mask"], batch["neg_mask"], batch["cand_mask"])]
             if keys else [[], [], []])
    parts = gather_object([(keys, *masks)])
    empty = out.lm_sum.new_zeros((0, dim), dtype=torch.float32)
    qg = gather_rows(q.float() if keys else empty)
    dg = gather_rows(d.float() if keys else empty)
    col: dict[tuple[str, str], int] = {}
    d_rows, offset = [], 0
    for pkeys, *_ in parts:
        for j, key in enumerate(pkeys):
            if tuple(key) not in col:
                col[tuple(key)] = len(d_rows)
                d_rows.append(offset + j)
        offset += len(pkeys)
    R, D = sum(len(p[1]) for p in parts), len(col)
    pos = torch.zeros((R, D), dtype=torch.bool)
    neg = torch.zeros((R, D), dtype=torch.bool)
    cand = torch.zeros((R, D), dtype=torch.bool)
    roles = [k[1] for k in col]
    r = 0
    for pkeys, ppos, pneg, pcand in parts:
        gcol = [col[tuple(k)] for k in pkeys]
        for row_p, row_n, row_c in zip(ppos, pneg, pcand):
            for c, (a, b_) in enumerate(zip(row_p, row_n)):
                pos[r, gcol[c]] |= a
                neg[r, gcol[c]] |= b_
            want = {pkeys[c][1] for c, v in enumerate(row_c) if v}
            cand[r] = torch.tensor([role in want for role in roles], dtype=torch.bool)
            r += 1
    if R == 0 or D == 0:
        return qg.sum() * 0.0 + dg.sum() * 0.0
    dg = dg[torch.tensor(d_rows, device=dg.device)]
    dev = qg.device
    return contrastive_loss(qg, dg, pos.to(dev), neg.to(dev), cand.to(dev), kind=kind, temperature=temperature)


def global_onegen_loss(acc: Any, out: Any, batch: dict[str, Any], weight: float, cfg: OneGenTrainConfig,
                       n_tok_global: int, active: int, dim: int) -> tuple[Any, dict[str, float]]:
    """The loss to back-propagate on this process and the global micro-batch's reported losses.

    LM: token losses summed over this share, divided by the global batch's labelled tokens, times N
    (DDP averages): the gradient of the global token mean, as in one process. Retrieval: with
    ``gather_negatives`` the whole global batch's loss (:func:`gathered_contrastive_loss`); without,
    this share's loss, averaged over the processes that hold examples. One process: exactly
    ``lambda_lm * lm_loss + lambda_r * retrieval_loss`` of the batch."""
    from unirag.onegen.losses import contrastive_loss
    from unirag.train.dist import all_sum

    mc = cfg.model
    n = acc.num_processes
    lm = out.lm_sum * (weight * n / n_tok_global) if n_tok_global else out.lm_sum * 0.0
    if cfg.gather_negatives and n > 1:
        ret = gathered_contrastive_loss(out, batch, mc.loss, mc.temperature, dim, include=weight > 0)
        ret_bwd, ret_local = ret, float(ret.detach()) * weight / active
    else:
        if out.query_vectors is not None:
            ret = contrastive_loss(out.query_vectors, out.doc_vectors, batch["pos_mask"], batch["neg_mask"],
                                   batch["cand_mask"], kind=mc.loss, temperature=mc.temperature)
        else:
            ret = out.lm_sum * 0.0
        ret_bwd, ret_local = ret * (weight * n / active), float(ret.detach()) * weight / active
    lm_rep, ret_rep = all_sum(acc, [float(lm.detach()) / n, ret_local])
    loss = mc.lambda_lm * lm + mc.lambda_r * ret_bwd
    return loss, {"loss": mc.lambda_lm * lm_rep + mc.lambda_r * ret_rep, "lm_loss": lm_rep, "retrieval_loss": ret_rep}


def train_onegen(cfg: OneGenTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train per ``cfg``; saves the final model (or adapter) with tokenizer and OneGen config into
    ``cfg.output_dir`` and returns a summary (losses, steps, timings, held-out LM loss)."""
    import torch
    from accelerate.utils import send_to_device, set_seed

    from unirag.onegen.collator import OneGenCollator
    from unirag.onegen.data import load_documents
    from unirag.train.common import latest_checkpoint, load_checkpoint, save_checkpoint
    from unirag.train.dist import active_processes, local_share, make_accelerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    acc = make_accelerator(1, cfg.mixed_precision)  # accumulation is done here: groups follow the epoch
    set_seed(cfg.seed)
    say = acc.print if progress else (lambda *a, **k: None)
    if acc.is_main_process:
        ensure_data(cfg, say)
    acc.wait_for_everyone()
    model = build_model(cfg)
    docs = load_documents(cfg.docs_file)
    train = encode_file(cfg.train_file, model, docs, cfg.max_length)
    held = encode_file(cfg.eval_file, model, docs, cfg.max_length) if cfg.eval_file else []
    collator = OneGenCollator(model.tokenizer, cfg.model, docs, cfg.max_negatives)
    summary: dict[str, Any] = {"train_examples": len(train), "heldout_examples": len(held),
                               "num_processes": acc.num_processes}
    ckroot = Path(cfg.checkpoint_dir)
    last = latest_checkpoint(ckroot) if cfg.resume else None
    if held and acc.is_main_process and last is None:   # a resumed run measured it when it started
        summary["heldout_lm_before"] = heldout_lm_loss(model, held, collator)
        say(f"held-out LM loss before: {json.dumps(summary['heldout_lm_before'])}")
    params = [p for p in model.parameters() if p.requires_grad]
    summary["trainable_params"] = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    n_batches = math.ceil(len(train) / cfg.batch_size)      # global micro-batches per epoch
    per_epoch = math.ceil(n_batches / cfg.grad_accum)       # optimizer steps per epoch
    total = cfg.max_steps or per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.warmup_steps, total))
    dim = model.hf_model.config.hidden_size          # retrieval vectors are normalised last hidden states
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    state = {"step": 0, "epoch": 0, "batches_done": 0}
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
        order = epoch_order(len(train), cfg.seed + epoch)
        while state["batches_done"] < n_batches and step < total:
            b = state["batches_done"]
            ids = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            mine, weight = local_share(acc, ids)
            batch = send_to_device(collator([train[i] for i in mine]), acc.device)
            sync = (b + 1) % cfg.grad_accum == 0 or b + 1 == n_batches
            with contextlib.nullcontext() if sync else acc.no_sync(model):
                out = model(batch)
                n_tok = sum(_n_targets(train[i]) for i in ids)      # the global micro-batch's LM targets
                loss, rep = global_onegen_loss(acc, out, batch, weight, cfg, n_tok, active_processes(acc, len(ids)), dim)
                acc.backward(loss / cfg.grad_accum)
            if sync:
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_done"] += 1
            window["loss"] += rep["loss"]
            window["lm"] += rep["lm_loss"]
            window["ret"] += rep["retrieval_loss"]
            window["n"] += 1
            if not sync:
                continue
            step += 1
            state["step"] = step
            if cfg.max_minutes and _budget_over(acc, time.time() - start > 60 * cfg.max_minutes):
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
                acc.wait_for_everyone()
        if state["batches_done"] >= n_batches:
            state["epoch"] += 1
            state["batches_done"] = 0
    acc.wait_for_everyone()
    unwrapped = acc.unwrap_model(model)
    summary["steps"] = step
    summary["train_minutes"] = (time.time() - start) / 60
    if held and acc.is_main_process:
        summary["heldout_lm_after"] = heldout_lm_loss(unwrapped, held, collator)
        say(f"held-out LM loss after: {json.dumps(summary['heldout_lm_after'])}")
    out_dir = Path(cfg.output_dir) if cfg.output_dir else default_onegen_dir()
    if acc.is_main_process:
        unwrapped.save_pretrained(out_dir)
        (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["output_dir"] = str(out_dir)
    return summary
