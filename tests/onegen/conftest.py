"""Fixtures: the tiny Llama and its tokenizer saved as a local model folder, so every loader
(``load_causal_lm``, ``OneGenModel.from_base``) works offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.onegen.helpers import make_llama, make_tokenizer


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A local model folder holding the tiny Llama (tied embeddings) and its tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer()
    make_llama(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def onegen_model(tiny_dir):
    """A fresh OneGenModel over the tiny Llama."""
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.model import OneGenModel

    return OneGenModel.from_base(OneGenConfig(base_model=str(tiny_dir), max_doc_tokens=24))
