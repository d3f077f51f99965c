"""OneGen (Zhang et al. 2024): one causal LM that generates text and, at special tokens, the
vectors used to retrieve. Torch-heavy names load lazily on first access."""

from __future__ import annotations

import importlib
from typing import Any

from unirag.onegen.config import OneGenConfig, TokenSpec, default_onegen_dir
from unirag.onegen.data import OneGenDataError, OneGenExample, Retrieval, load_examples, write_examples

_LAZY = {
    "OneGenModel": "unirag.onegen.model",
    "OneGenOutput": "unirag.onegen.model",
    "OneGenCollator": "unirag.onegen.collator",
    "encode_example": "unirag.onegen.collator",
    "add_special_tokens": "unirag.onegen.tokens",
    "bpr_loss": "unirag.onegen.losses",
    "infonce_loss": "unirag.onegen.losses",
    "contrastive_loss": "unirag.onegen.losses",
    "mine_bm25_negatives": "unirag.onegen.mining",
    "mine_model_negatives": "unirag.onegen.mining",
}
_OPTIONAL = ("unirag.models.decoding", "unirag.onegen.linking")

__all__ = ["OneGenConfig", "OneGenDataError", "OneGenExample", "Retrieval", "TokenSpec",
           "default_onegen_dir", "load_examples", "write_examples", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    for mod in _OPTIONAL:  # inference modules, when present, expose their public names here
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'unirag.onegen' has no attribute {name!r}")
