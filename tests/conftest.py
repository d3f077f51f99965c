"""Shared fixtures: tiny randomly initialised models saved to temporary folders (no network)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# corpora on ONNX Runtime, not on the runtime a timing race picks (tests/foundation/test_onnx_encoder.py
# covers the race): the same runtime on every machine
os.environ.setdefault("UNIRAG_ONNX", "1")


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (its tokenizer is reused by tiny encoders)."""
    from unirag.models import resolve_model

    return resolve_model("all-minilm-l6-v2")


def _tiny_bert(path: Path, tokenizer_dir: str, seed: int, hidden: int, layers: int) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer, 32-wide random BERT with the MiniLM tokenizer, saved as a model folder."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-encoder"), minilm_dir, seed=0, hidden=32, layers=2)


@pytest.fixture(scope="session")
def tiny_encoder_dir_b(tmp_path_factory, minilm_dir) -> Path:
    """Another tiny encoder (different weights, 48 wide) to test encoder-mismatch errors."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny-encoder-b"), minilm_dir, seed=1, hidden=48, layers=1)


@pytest.fixture(scope="session")
def smollm_tokenizer_dir() -> str:
    """The packaged SmolLM2 folder (converted once into the cache); only its tokenizer is used by tiny tests."""
    from unirag.models import resolve_model

    return resolve_model("smollm2-135m-instruct", progress=False)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm_tokenizer_dir) -> Path:
    """A 2-layer, 32-wide random Llama with the SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


PASSAGES = [
    {"id": "p1", "title": "Mona Lisa", "text": "The Mona Lisa is a portrait painted by Leonardo da Vinci in Florence.", "topic": "Arts"},
    {"id": "p2", "title": "Eiffel Tower", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.", "topic": "Places"},
    {"id": "p3", "title": "Photosynthesis", "text": "Photosynthesis converts light energy into chemical energy in plants.", "topic": "Science"},
    {"id": "p4", "title": "Jupiter", "text": "Jupiter is the largest planet in the Solar System, a gas giant.", "topic": "Science"},
    {"id": "p5", "title": "Beethoven", "text": "Ludwig van Beethoven was a German composer and pianist.", "topic": "Arts"},
    {"id": "p6", "title": "Nile", "text": "The Nile is a major north-flowing river in northeastern Africa.", "topic": "Places"},
]


@pytest.fixture
def corpus_jsonl(tmp_path) -> Path:
    """A small JSONL corpus with an extra metadata field."""
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    return path
