"""DPR training (Karpukhin et al. 2020): a bi-encoder trained with in-batch negatives plus BM25
hard negatives, for corpora where no good off-the-shelf encoder exists.

Each step scores every question against every positive and hard-negative passage of the batch
(``[B, B * (1 + h)]``) and applies cross-entropy towards its own positive. After training the
corpus is re-embedded with the passage encoder into a new index folder, and the foundation's
retrieval metrics (recall / MRR / nDCG) are reported before and after.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from unirag.config.base import ConfigBase


@dataclass
class DprTrainConfig(ConfigBase):
    """Everything ``unirag train retriever`` reads from its YAML file."""

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

    out = Path(cfg.output_dir)
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
    summary: dict = {"train_pairs": len(train), "dev_pairs": len(dev)}
    if dev:
        summary["before"] = _evaluate(q_enc, index_dir, dev, cfg.ks)
    negs = hard_negatives(BM25Retriever.load(index_dir), train, cfg.bm25_depth) if cfg.hard_negatives else []
    params = list(q_enc.model.parameters()) + ([] if cfg.shared_encoder else list(p_enc.model.parameters()))
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    q_enc.model.train()
    p_enc.model.train()
    log = (out / "log.jsonl").open("w", encoding="utf-8")
    rng = np.random.RandomState(cfg.seed)
    order, pos, t0, hist = rng.permutation(len(train)), 0, time.time(), []
    for step in range(1, cfg.max_steps + 1):
        if pos + cfg.batch_size > len(order):
            order, pos = rng.permutation(len(train)), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        batch = [train[i] for i in idx]
        texts = [store.get(e.gold[0]).contents for e in batch]
        for i in idx:
            texts += [store.get(n).contents for n in negs[i][: cfg.hard_negatives]] if negs else []
        loss = dpr_loss(q_enc.embed([e.question for e in batch]), p_enc.embed(texts), cfg.scale)
        loss.backward()
        opt.step()
        opt.zero_grad()
        hist.append(float(loss.detach()))
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            rec = {"step": step, "loss": sum(hist) / len(hist), "sec_per_step": (time.time() - t0) / len(hist)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
            hist, t0 = [], time.time()
    log.close()
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
    summary["steps"] = cfg.max_steps
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
