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
    from unirag.models.decoding import EngineModel
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
def tiny_index(tiny_index_dir, tiny_onegen):
    """The opened index: a dense retriever whose embedding function is the tiny model."""
    from unirag.onegen.docindex import open_onegen_index

    return open_onegen_index(tiny_index_dir, tiny_onegen)


def _eager_dir(tmp_path_factory, tiny_llama_dir, role: str) -> Path:
    """Save a tiny OneGen model whose greedy choice is always the token of ``role`` (until the
    engine bans it): every input embedding gets a large constant first component, so the final
    hidden state always points along it, and only that token's (untied) head row reads it."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.model import OneGenModel
    from unirag.onegen.tokens import add_special_tokens

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    lm = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    cfg = OneGenConfig()
    ids = add_special_tokens(lm, tok, cfg)
    lm.config.tie_word_embeddings = False
    head = lm.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    with torch.no_grad():
        lm.get_input_embeddings().weight[:, 0] = 5.0
        head.weight[:, 0] = 0.0
        head.weight[ids[role], 0] = 100.0
    path = tmp_path_factory.mktemp(f"eager-{role}") / "model"
    OneGenModel(lm, tok, cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def eager_onegen_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """A saved OneGen model that emits the query token whenever it may."""
    return _eager_dir(tmp_path_factory, tiny_llama_dir, "query")


@pytest.fixture(scope="session")
def eager_linker_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """A saved OneGen model that emits the mention token whenever it may."""
    return _eager_dir(tmp_path_factory, tiny_llama_dir, "mention")


@pytest.fixture(scope="session")
def eager_onegen(eager_onegen_dir):
    """The eager OneGen model, loaded as ``OneGenModel``."""
    from unirag.onegen.model import OneGenModel

    return OneGenModel.from_pretrained(eager_onegen_dir)


@pytest.fixture(scope="session")
def eager_index_dir(tmp_path_factory, eager_onegen, eager_onegen_dir) -> Path:
    """The eager model's document index over the ten test documents."""
    from unirag.onegen.docindex import build_onegen_index, model_name

    out = tmp_path_factory.mktemp("eager-index") / "index"
    return build_onegen_index(passages(), out, eager_onegen, name=model_name(eager_onegen_dir), progress=False)
