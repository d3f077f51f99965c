"""unirag: retrieval-augmented generation, classic RAG and OneGen, offline on the Hugging Face stack.

The door::

    import unirag
    rag = unirag.RAG.load(engine="pipeline")          # "rag-token", "rag-sequence", "onegen"
    answer = rag.ask("Who discovered penicillin?", unirag.SamplingParams(max_new_tokens=64))

Importing this package loads no heavy back end (torch, transformers, faiss) and writes nothing:
the names below resolve on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RAG": "unirag.api.rag",
    "LoadConfig": "unirag.api.rag",
    "ENGINES": "unirag.api.rag",
    "SamplingParams": "unirag.sampling_params",
    "Answer": "unirag.outputs",
    "Source": "unirag.outputs",
    "Span": "unirag.outputs",
    "TraceStep": "unirag.outputs",
    "Usage": "unirag.outputs",
    "Timings": "unirag.outputs",
    "TextDelta": "unirag.outputs",
    "RetrievalEvent": "unirag.outputs",
    "Finished": "unirag.outputs",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unirag' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
