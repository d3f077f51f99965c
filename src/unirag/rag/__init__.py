"""Classic RAG (Lewis et al. 2020): RAG-Sequence and RAG-Token over unirag's retriever and generator.

``RagConfig`` is light; the torch-backed names (``RagModel``, the marginal losses, decoding and
attribution functions) load on first access.
"""

from __future__ import annotations

from importlib import import_module

from unirag.rag.config import RagConfig

_LAZY = {
    "RagModel": "unirag.rag.model",
    "RagOutput": "unirag.rag.model",
    "Retrieved": "unirag.rag.model",
    "RagAnswer": "unirag.rag.answer",
    "answer_questions": "unirag.rag.answer",
    "rag_sequence_nll": "unirag.rag.marginals",
    "rag_token_nll": "unirag.rag.marginals",
    "rag_sequence_nll_reference": "unirag.rag.marginals",
    "rag_token_nll_reference": "unirag.rag.marginals",
    "token_beam_search": "unirag.rag.decoding",
    "token_sample": "unirag.rag.decoding",
    "sequence_thorough": "unirag.rag.decoding",
    "sequence_fast": "unirag.rag.decoding",
    "token_posteriors": "unirag.rag.attribution",
    "sequence_posterior": "unirag.rag.attribution",
}

__all__ = ["RagConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unirag.rag' has no attribute {name!r}")
