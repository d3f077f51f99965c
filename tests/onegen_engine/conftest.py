"""Fixtures: a tiny random Llama (hidden 32, 2 layers) with the SmolLM2 tokenizer plus the OneGen
tokens, wrapped for the engine, and a small document index embedded by that model."""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = [
    ("Mona Lisa", "The Mona Lisa is a portrait painted by Leonardo da Vinci in Florence."),
    ("Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, built in 1889."),
    ("Photosynthesis", "Photosynthesis converts light energy into chemical energy."),
    ("Jupiter", "Jupiter is the largest planet in the Solar System."),
    ("Beethoven", "Ludwig van Beethoven was a German composer and pianist born in Bonn."),
    ("Nile", "The Nile is a major north-flowing river in northeastern Africa, about 6,650 km long."),
    ("Tokyo", "Tokyo is the capital of Japan."),
    ("Python", "Python is a high-level programming language created by Guido van Rossum."),
    ("Amazon", "The Amazon rainforest covers much of the Amazon basin of South America."),
    ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level."),
]


@pytest.fixture(scope="session")
def tiny_onegen(tiny_llama_dir):
    """``EngineModel`` over a tiny random Llama with [RQ]/[RD]/[RM]/[RE] added."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.engine import EngineModel
    from unirag.onegen.tokens import add_special_tokens

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    lm = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    cfg = OneGenConfig()
    ids = add_special_tokens(lm, tok, cfg)
    return EngineModel(lm, tok, ids["query"], cfg.passage_start, cfg.passage_end, name="tiny-onegen",
                       document_token_id=ids["document"])


def passages(prefix: str = "d"):
    """The test documents as passages."""
    from unirag.corpus.passage import Passage

    return [Passage(id=f"{prefix}{i}", title=t, text=x) for i, (t, x) in enumerate(DOCS)]


@pytest.fixture(scope="session")
def make_passages():
    """``make_passages(prefix)``: the test documents with ids ``prefix0..prefix9``."""
    return passages


@pytest.fixture(scope="session")
def tiny_index_dir(tmp_path_factory, tiny_onegen) -> Path:
    """A OneGen index folder over the ten test documents."""
    from unirag.onegen.docindex import build_onegen_index

    out = tmp_path_factory.mktemp("og-index") / "index"
    return build_onegen_index(passages(), out, tiny_onegen, progress=False)


@pytest.fixture(scope="session")
def tiny_index(tiny_index_dir):
    """The opened index."""
    from unirag.onegen.docindex import OneGenIndex

    return OneGenIndex.load(tiny_index_dir)
