"""save_pretrained / from_pretrained round trips (full and LoRA), and the accelerate trainer:
it lowers the loss, and a resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.onegen.helpers import DOCS, example_rows
from tests.tolerance import assert_f32_close, model_terms
from unirag.onegen.config import OneGenConfig
from unirag.onegen.data import write_documents
from unirag.onegen.model import OneGenModel


def _terms(model, rank: int) -> int:
    """Accumulated terms of a unit retrieval vector: the model path to the last hidden state (LoRA adds
    its rank to each adapted matmul) and the normalisation over the width."""
    c = model.hf_model.config
    return model_terms(model.hf_model, model.config.max_doc_tokens + 1, log_softmax=False) + 4 * rank * c.num_hidden_layers \
        + c.hidden_size


def test_full_roundtrip(onegen_model, tmp_path):
    with torch.no_grad():
        onegen_model.lm.get_input_embeddings().weight[onegen_model.token_id("query")] += 1.0
    onegen_model.config.loss = "infonce"
    onegen_model.save_pretrained(tmp_path / "m")
    back = OneGenModel.from_pretrained(tmp_path / "m")
    assert back.config == onegen_model.config and back.token_id("entity") == onegen_model.token_id("entity")
    texts = list(DOCS.values())
    # the same weights through the same kernels and shapes: exactly the same vectors
    np.testing.assert_array_equal(back.embed_documents(texts), onegen_model.embed_documents(texts))


def test_lora_roundtrip_saves_only_adapter_and_new_rows(onegen_model, tmp_path):
    from unirag.train.onegen import LoraSettings, apply_lora

    apply_lora(onegen_model, LoraSettings(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = {n for n, p in onegen_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("trainable_tokens" in n for n in trainable)
    with torch.no_grad():  # move the adapter and the new rows away from their initial values
        for n, p in onegen_model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    onegen_model.save_pretrained(tmp_path / "a")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a" / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert not any(k.endswith("embed_tokens.weight") or k.endswith("lm_head.weight") for k in keys)
    back = OneGenModel.from_pretrained(tmp_path / "a")
    texts = list(DOCS.values())       # tolerance: a loader may fold the adapter into the weights (merge=True)
    assert_f32_close(back.embed_documents(texts), onegen_model.embed_documents(texts), _terms(onegen_model, 4))
    ctx = [onegen_model.chat_prompt("Who directed Alien?", "[RQ]")]
    assert_f32_close(back.query_vectors(ctx), onegen_model.query_vectors(ctx), _terms(onegen_model, 4))
    # the trained query row reaches the LM head through the tie as well
    h = torch.randn(1, 32)
    head = onegen_model.hf_model.get_output_embeddings()
    assert_f32_close(back.hf_model.get_output_embeddings()(h), head(h), 32,
                     magnitude=float((h.abs() @ head.weight.detach().abs().T).max()))


def _setup(tmp_path, tiny_dir, lora: bool, steps: int, **kw):
    from unirag.train.onegen import LoraSettings, OneGenTrainConfig

    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in example_rows() * 2))
    write_documents({k: (k, v) for k, v in DOCS.items()}, data / "docs.jsonl")
    return OneGenTrainConfig(
        train_file=str(data / "train.jsonl"), docs_file=str(data / "docs.jsonl"), eval_file=str(data / "train.jsonl"),
        model=OneGenConfig(base_model=str(tiny_dir), max_doc_tokens=24, loss="infonce"),
        lora=LoraSettings(r=4, target_modules=["q_proj", "v_proj"]) if lora else None,
        output_dir=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "ck"), learning_rate=5e-3,
        batch_size=2, max_steps=steps, warmup_steps=1, log_every=1, save_every=2, **kw)


@pytest.mark.parametrize("lora", [False, True])
def test_train_lowers_loss_and_saves(tmp_path, tiny_dir, lora):
    from unirag.train.onegen import train_onegen

    cfg = _setup(tmp_path, tiny_dir, lora, steps=9, epochs=3)
    summary = train_onegen(cfg, progress=False)
    log = [json.loads(x) for x in (tmp_path / "ck" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 10))
    assert log[-1]["loss"] < log[0]["loss"]
    assert summary["heldout_lm_after"]["all"] < summary["heldout_lm_before"]["all"]
    back = OneGenModel.from_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / ("adapter_config.json" if lora else "config.json")).is_file()
    assert back.embed_documents(["Nile. A river."]).shape == (1, 32)


def test_resume_matches_uninterrupted(tmp_path, tiny_dir):
    import shutil

    from unirag.train.onegen import train_onegen

    train_onegen(_setup(tmp_path / "a", tiny_dir, True, steps=4), progress=False)
    b = _setup(tmp_path / "b", tiny_dir, True, steps=4)
    train_onegen(b, progress=False)  # writes ck/step-2 on the way
    shutil.rmtree(tmp_path / "b" / "out")  # "interrupted" after step 2: resume from ck/step-2
    (tmp_path / "b" / "ck" / "log.jsonl").unlink()
    train_onegen(b, progress=False)
    log = [json.loads(x)["step"] for x in (tmp_path / "b" / "ck" / "log.jsonl").read_text().splitlines()]
    assert log == [3, 4]
    ma, mb = OneGenModel.from_pretrained(tmp_path / "a" / "out"), OneGenModel.from_pretrained(tmp_path / "b" / "out")
    texts = list(DOCS.values())
    # the resumed run repeats the uninterrupted run's operations in the same order: exactly equal
    np.testing.assert_array_equal(ma.embed_documents(texts), mb.embed_documents(texts))
    b.resume = False  # without resume the run starts over
    shutil.rmtree(tmp_path / "b" / "ck")
    train_onegen(b, progress=False)
    log = [json.loads(x)["step"] for x in (tmp_path / "b" / "ck" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]


def test_bare_adapter_folder_loads_without_tokenizer_files(onegen_model, tmp_path):
    from unirag.train.onegen import LoraSettings, apply_lora

    apply_lora(onegen_model, LoraSettings(r=2, target_modules=["q_proj"]))
    with torch.no_grad():
        for p in onegen_model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    onegen_model.save_pretrained(tmp_path / "a")
    for f in (tmp_path / "a").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            f.unlink()
    back = OneGenModel.from_pretrained(tmp_path / "a")
    assert back.token_id("query") == onegen_model.token_id("query")
    texts = list(DOCS.values())
    assert_f32_close(back.embed_documents(texts), onegen_model.embed_documents(texts), _terms(onegen_model, 2))


def test_merge_adapter_keeps_vectors(onegen_model):
    from unirag.train.onegen import LoraSettings, apply_lora

    apply_lora(onegen_model, LoraSettings(r=4))
    with torch.no_grad():
        for p in onegen_model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    texts = list(DOCS.values())
    ctx = [onegen_model.chat_prompt("Who directed Alien?", "[RQ]")]
    a, q = onegen_model.embed_documents(texts), onegen_model.query_vectors(ctx)
    onegen_model.merge_adapter()
    assert not hasattr(onegen_model.lm, "peft_config")
    # W + BA folded into one matrix against x W + (x B) A: the model path plus the rank-r product
    assert_f32_close(onegen_model.embed_documents(texts), a, _terms(onegen_model, 8))
    assert_f32_close(onegen_model.query_vectors(ctx), q, _terms(onegen_model, 8))


def test_time_budget_stops_and_rerun_goes_on(tmp_path, tiny_dir):
    from unirag.train.onegen import train_onegen

    cfg = _setup(tmp_path, tiny_dir, True, steps=3, max_minutes=1e-6)
    cfg.eval_file = ""
    assert train_onegen(cfg, progress=False)["steps"] == 1
    assert (tmp_path / "ck" / "step-1" / "state.json").is_file()
    assert train_onegen(cfg, progress=False)["steps"] == 2
    log = [json.loads(x)["step"] for x in (tmp_path / "ck" / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2]
    cfg.max_minutes, cfg.stop_at_step = 0.0, 2
    assert train_onegen(cfg, progress=False)["steps"] == 2  # already there: nothing more to do
    cfg.stop_at_step = 0
    assert train_onegen(cfg, progress=False)["steps"] == 3


def test_token_rows_get_their_own_learning_rate(onegen_model):
    from unirag.train.onegen import LoraSettings, OneGenTrainConfig, apply_lora, param_groups

    apply_lora(onegen_model, LoraSettings(r=2, target_modules=["q_proj"]))
    cfg = OneGenTrainConfig(train_file="t", docs_file="d", learning_rate=1e-4, token_learning_rate=3e-3)
    groups = param_groups(onegen_model, cfg)
    assert [g["lr"] for g in groups] == [1e-4, 3e-3]
    rows = len(onegen_model.config.tokens) * onegen_model.hf_model.config.hidden_size
    assert sum(p.numel() for p in groups[1]["params"]) == rows  # tied embeddings: one set of rows
    trainable = sum(p.numel() for p in onegen_model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == trainable
    cfg.token_learning_rate = 0.0
    assert [g["lr"] for g in param_groups(onegen_model, cfg)] == [1e-4, 1e-4]
