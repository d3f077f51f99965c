"""The runs compared by ``test_accelerate.py``, one stage per fresh interpreter:

``python -m tests.train.runs reference ROOT``: build the tiny models and data, then run A (one process,
4 steps, checkpoints at steps 2 and 4) of each trainer, and copy A's step-2 checkpoint to D's folder.

``python -m tests.train.runs multi ROOT``: B (two processes, stopped after step 2) and D (two processes
resuming A's step 2) of each trainer under ``debug_launcher``, then C (one process resuming B's
checkpoint to step 4).

Every model is dropout-free, so the runs compute the same function. Each stage writes
``ROOT/<stage>.json`` with its wall time.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

TRAINERS = ("onegen", "rag", "dpr")


# ----------------------------------------------------------------------------------------- setup
def setup(root: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    from tests.onegen.helpers import DOCS, example_rows, make_llama
    from tests.onegen.helpers import make_tokenizer as onegen_tokenizer
    from tests.rag.conftest import QUESTIONS, make_tokenizer, passages, tiny_llama
    from unirag.models.encoder import Encoder
    from unirag.onegen.data import write_documents
    from unirag.retrieval.build import build_index

    og = root / "onegen-parts"
    tok = onegen_tokenizer()
    make_llama(len(tok)).save_pretrained(og / "tiny")
    tok.save_pretrained(og / "tiny")
    (og / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in example_rows() * 3))  # 9 examples
    write_documents({k: (k, v) for k, v in DOCS.items()}, og / "docs.jsonl")

    rp = root / "rag-parts"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(make_tokenizer("bert")), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    Encoder(BertModel(cfg).eval(), make_tokenizer("bert"), "tiny-bert", "mean", False, 64).save_pretrained(rp / "enc")
    gen, gtok = tiny_llama(), make_tokenizer("causal")
    gen.save_pretrained(rp / "gen")
    gtok.save_pretrained(rp / "gen")
    build_index(passages(), rp / "idx", encoder=str(rp / "enc"), bm25=True, progress=False)
    (rp / "train.jsonl").write_text("".join(json.dumps({"question": q, "answers": [a], "gold": a}) + "\n"
                                            for q, a in QUESTIONS))                               # 6 questions


# ----------------------------------------------------------------------------------------- configs
def onegen_cfg(root: Path, run: str, **kw):
    from unirag.onegen.config import OneGenConfig
    from unirag.train.onegen import LoraSettings, OneGenTrainConfig

    p, out = root / "onegen-parts", root / "onegen" / run
    return OneGenTrainConfig(
        train_file=str(p / "train.jsonl"), docs_file=str(p / "docs.jsonl"),
        model=OneGenConfig(base_model=str(p / "tiny"), max_doc_tokens=24, loss="infonce"),
        lora=LoraSettings(r=4, target_modules=["q_proj", "v_proj"]), output_dir=str(out / "out"),
        checkpoint_dir=str(out / "checkpoints"), learning_rate=5e-3, batch_size=3, grad_accum=2, max_steps=4,
        warmup_steps=1, log_every=1, save_every=2, gather_negatives=True, **kw)


def rag_cfg(root: Path, run: str, **kw):
    from unirag.rag.config import RagConfig
    from unirag.train.rag import LoraSettings, RagTrainConfig

    p = root / "rag-parts"
    rag = RagConfig(question_encoder=str(p / "enc"), generator=str(p / "gen"), index=str(p / "idx"), n_docs=2,
                    system_prompt="", max_answer_tokens=6, variant="token")
    return RagTrainConfig(output_dir=str(root / "rag" / run), rag=rag, train_data=str(p / "train.jsonl"),
                          dev_data=None, max_steps=4, batch_size=3, lr=3e-3, lr_query_encoder=1e-3, warmup_steps=1,
                          log_every=1, save_every=2, monitor_every=0, eval_before=False, eval_after=False,
                          lora=LoraSettings(enabled=True, r=4, alpha=8), **kw)


def dpr_cfg(root: Path, run: str, **kw):
    from unirag.train.retriever import DprTrainConfig

    p = root / "rag-parts"
    return DprTrainConfig(output_dir=str(root / "dpr" / run), encoder=str(p / "enc"), index=str(p / "idx"),
                          train_data=str(p / "train.jsonl"), dev_data=None, max_steps=4, batch_size=3,
                          hard_negatives=1, lr=1e-3, log_every=1, save_every=2, rebuild_index=False,
                          gather_negatives=True, **kw)


def train(kind: str, root: Path, run: str, stop: int | None) -> None:
    """Run trainer ``kind`` for run ``run``; ``stop``: end after that step (the schedule stays 4 steps)."""
    if kind == "onegen":
        from unirag.train.onegen import train_onegen

        train_onegen(onegen_cfg(root, run, stop_at_step=stop or 4), progress=False)
    elif kind == "rag":
        from unirag.train.rag import train_rag

        train_rag(rag_cfg(root, run, stop_after=stop))
    else:
        from unirag.train.retriever import train_retriever

        train_retriever(dpr_cfg(root, run, stop_after=stop))


def run_folder(root: Path, kind: str, run: str) -> Path:
    """Where run ``run`` of trainer ``kind`` writes ``log.jsonl`` and ``checkpoints/``."""
    return root / kind / run / ("checkpoints" if kind == "onegen" else "")


def ck_folder(root: Path, kind: str, run: str) -> Path:
    return root / kind / run / "checkpoints"


# ----------------------------------------------------------------------------------------- stages
def reference(root: Path) -> None:
    from tests.train.launch import run_single

    setup(root)
    for kind in TRAINERS:
        run_single(train, kind, root, "a", None)
        ck_folder(root, kind, "d").mkdir(parents=True)
        shutil.copytree(ck_folder(root, kind, "a") / "step-2", ck_folder(root, kind, "d") / "step-2")


def multi(root: Path) -> None:
    from tests.train.launch import run_multi, run_single

    jobs = []
    for kind in TRAINERS:
        jobs += [(train, (kind, root, "b", 2)), (train, (kind, root, "d", None))]
    run_multi(jobs, num_processes=2)
    for kind in TRAINERS:
        shutil.copytree(ck_folder(root, kind, "b"), ck_folder(root, kind, "c"))
        run_single(train, kind, root, "c", None)


if __name__ == "__main__":
    stage, folder = sys.argv[1], Path(sys.argv[2])
    t0 = time.time()
    {"reference": reference, "multi": multi}[stage](folder)
    (folder / f"{stage}.json").write_text(json.dumps({"seconds": time.time() - t0}))
