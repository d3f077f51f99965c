"""DPR training (Karpukhin et al. 2020): a bi-encoder trained with in-batch negatives plus BM25
hard negatives, for corpora where no good off-the-shelf encoder exists.

Each step scores every question against every positive and hard-negative passage of the batch
(``[B, B * (1 + h)]``) and applies cross-entropy towards its own positive. After training the
corpus is re-embedded with the passage encoder into a new index folder, and the foundation's
retrieval metrics (recall / MRR / nDCG) are reported before and after.

Runs under ``accelerate launch --num_processes N`` too: ``batch_size`` is the global batch, each
process encodes its share (:mod:`unirag.train.dist`); ``gather_negatives`` all-gathers the question
and passage vectors (with gradients) so every question is scored against the whole global batch, as
in one process. Checkpoints (``save_every``) hold the unwrapped towers and resume with any N.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from unirag.config.base import ConfigBase


@dataclass
class DprTrainConfig(ConfigBase):
    """Everything ``unirag train retriever`` reads from its YAML file. ``batch_size`` is the global
    batch (split over the processes under ``accelerate launch``); ``save_every`` (0 = never) writes
    resumable checkpoints into ``output_dir/checkpoints``, and ``stop_after`` ends a run early at
    that step, keeping the schedule of ``max_steps`` (a later run resumes)."""

    output_dir: str
    encoder: str = "all-minilm-l6-v2"
    index: str | None = None
    train_data: str = "fanoutqa"
    dev_data: str | None = "fanoutqa"
    shared_encoder: bool = False
    max_steps: int = 200
    batch_size: int = 16
    hard_negatives: int = 1
    bm25_depth: int = 10
    lr: float = 2e-5
    scale: float = 20.0
    max_passage_tokens: int = 128
    seed: int = 0
    log_every: int = 10
    ks: list[int] = field(default_factory=lambda: [1, 5, 20])
    rebuild_index: bool = True
    gather_negatives: bool = False
    save_every: int = 0
    stop_after: int | None = None
    resume: bool = True


@dataclass
class DprExample:
    """A question and the ids of the passages that answer it."""

    question: str
    gold: list[str]


def load_pairs(source: str, split: str = "train") -> list[DprExample]:
    """``fanoutqa`` leaves (train / heldout of ``fanoutqa_split()``) or JSONL with ``question`` and
    ``gold`` (a passage id or list of ids)."""
    if source == "fanoutqa":
        from unirag.train.rag import load_qa

        return [DprExample(e.question, e.gold) for e in load_qa(source, split) if e.gold]
    from unirag.corpus.jsonl import iter_jsonl
    from unirag.corpus.passage import CorpusError

    out = []
    for lineno, row in iter_jsonl(source):  # CorpusError naming the file for a missing file or bad JSON
        gold = row.get("gold", row.get("positive_ids"))
        if "question" not in row or not gold:
            raise CorpusError(f"{source}:{lineno}: needs 'question' and 'gold'")
        out.append(DprExample(row["question"], [gold] if isinstance(gold, str) else list(gold)))
    return out


def hard_negatives(bm25, examples: list[DprExample], depth: int) -> list[list[str]]:
    """BM25's top passages for each question that are not gold (best first)."""
    res = bm25.search([e.question for e in examples], depth)
    return [[i for i in ids if i and i not in e.gold] for e, ids in zip(examples, res.ids)]


def dpr_loss(q, p, scale: float):
    """In-batch softmax cross-entropy: ``q [B, d]``, ``p [B * (1 + h), d]`` with positives first."""
    import torch

    scores = q @ p.T * scale
    return torch.nn.functional.cross_entropy(scores, torch.arange(q.shape[0], device=q.device))


def _towers(q_model, p_model):
    """One module holding the trainable towers (``p_model`` None: one shared encoder), so that
    accelerate prepares, synchronises and checkpoints them together."""
    import torch

    class Towers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = q_model
            self.p = p_model

        def forward(self, q_inputs: dict, p_inputs: dict):
            p = self.q if self.p is None else self.p
            return self.q(**q_inputs).last_hidden_state, p(**p_inputs).last_hidden_state

    return Towers()


def _inputs(enc, texts: list[str], device) -> dict:
    return dict(enc.tokenizer(texts, padding=True, truncation=True, max_length=enc.max_length,
                              return_tensors="pt").to(device))


def _evaluate(q_enc, index_dir, examples: list[DprExample], ks) -> dict:
    from unirag.eval.retrieval import RetrievalQuery, evaluate_retrieval
    from unirag.retrieval.dense import DenseRetriever

    queries = [RetrievalQuery(str(i), e.question, e.gold) for i, e in enumerate(examples)]
    return evaluate_retrieval(DenseRetriever.load(index_dir, encoder=q_enc), queries, ks=tuple(ks))


def train_retriever(cfg: DprTrainConfig) -> dict:
    """Train, save ``query_encoder/`` and ``passage_encoder/``, rebuild the index, report metrics."""
    import copy
    import random

    import numpy as np
    import torch

    from unirag.corpus.store import DocStore
    from unirag.index.folder import IndexFolder
    from unirag.models.encoder import Encoder
    from unirag.retrieval.bm25 import BM25Retriever
    from unirag.retrieval.build import build_index, ensure_default_index
    from unirag.train.common import latest_checkpoint, load_checkpoint, save_checkpoint
    from unirag.train.dist import active_processes, all_sum, gather_rows, local_share, make_accelerator

    acc = make_accelerator(1, cpu=not torch.cuda.is_available())
    main = acc.is_main_process
    out = Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "train_config.yaml")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    train = load_pairs(cfg.train_data, "train")  # bad data is reported before the index is built
    dev = load_pairs(cfg.dev_data, "heldout") if cfg.dev_data else []
    index_dir = Path(cfg.index) if cfg.index else ensure_default_index()
    store = DocStore(IndexFolder(index_dir).docs_dir)
    q_enc = Encoder.from_pretrained(cfg.encoder)
    p_enc = q_enc if cfg.shared_encoder else Encoder(copy.deepcopy(q_enc.model), q_enc.tokenizer, q_enc.name,
                                                     q_enc.pooling, q_enc.normalize, cfg.max_passage_tokens)
    summary: dict = {"train_pairs": len(train), "dev_pairs": len(dev), "num_processes": acc.num_processes}
    if dev and main:
        summary["before"] = _evaluate(q_enc, index_dir, dev, cfg.ks)
    negs = hard_negatives(BM25Retriever.load(index_dir), train, cfg.bm25_depth) if cfg.hard_negatives else []
    towers = _towers(q_enc.model, None if cfg.shared_encoder else p_enc.model)
    opt = torch.optim.AdamW(towers.parameters(), lr=cfg.lr)
    model, opt = acc.prepare(towers, opt)
    ckroot = out / "checkpoints"
    start = 0
    last = latest_checkpoint(ckroot) if cfg.resume else None
    if last is not None:
        start = int(load_checkpoint(last, towers, opt, None)["step"])
    model.train()
    log = (out / "log.jsonl").open("a" if last is not None else "w", encoding="utf-8") if main else None
    per_epoch = max(len(train) // cfg.batch_size, 1)
    end = cfg.max_steps if cfg.stop_after is None else min(cfg.stop_after, cfg.max_steps)
    t0, hist = time.time(), []
    for step in range(start + 1, end + 1):
        # the batch is a function of the seed and the step alone (not of the process count)
        epoch, b = divmod(step - 1, per_epoch)
        order = np.random.RandomState(cfg.seed + epoch).permutation(len(train))
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        mine, weight = local_share(acc, idx.tolist())
        texts = [store.get(train[i].gold[0]).contents for i in mine]
        for i in mine:
            texts += [store.get(n).contents for n in negs[i][: cfg.hard_negatives]] if negs else []
        qi, pi = _inputs(q_enc, [train[i].question for i in mine], acc.device), _inputs(p_enc, texts, acc.device)
        qh, ph = model(qi, pi)
        q, p = q_enc.pool(qh, qi["attention_mask"]), p_enc.pool(ph, pi["attention_mask"])
        n = acc.num_processes
        if cfg.gather_negatives and n > 1:
            keep = len(mine) if weight else 0     # a weight-0 share adds no rows
            pos, neg = p[:keep], (p[keep:] if weight else p[:0])
            loss = dpr_loss(gather_rows(q[:keep]), torch.cat([gather_rows(pos), gather_rows(neg)]), cfg.scale)
            bwd, rep = loss, float(loss.detach()) * weight / active_processes(acc, len(idx))
        else:
            loss = dpr_loss(q, p, cfg.scale)
            share = weight / active_processes(acc, len(idx))
            bwd, rep = loss * (share * n), float(loss.detach()) * share
        acc.backward(bwd)
        opt.step()
        opt.zero_grad()
        hist.append(all_sum(acc, [rep])[0])
        if log is not None and (step % cfg.log_every == 0 or step == cfg.max_steps):
            rec = {"step": step, "loss": sum(hist) / len(hist), "sec_per_step": (time.time() - t0) / len(hist)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            hist, t0 = [], time.time()
        if cfg.save_every and (step % cfg.save_every == 0 or step == end):
            acc.wait_for_everyone()
            if main:
                save_checkpoint(ckroot / f"step-{step}", towers, opt, None, {"step": step})
            acc.wait_for_everyone()
    if log is not None:
        log.close()
    if not main:
        return {**summary, "steps": end}
    q_enc.model.eval()
    p_enc.model.eval()
    name = f"dpr-{out.name}"
    q_enc.name = p_enc.name = name
    q_enc.save_pretrained(out / "query_encoder")
    p_enc.save_pretrained(out / "passage_encoder")
    if cfg.rebuild_index:
        new_index = build_index(iter(store), out / "index", encoder=p_enc, bm25=False, progress=False)
        summary["index"] = str(new_index)
        if dev:
            summary["after"] = _evaluate(q_enc, new_index, dev, cfg.ks)
    summary["steps"] = end
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
