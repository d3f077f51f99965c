"""Open a retriever of any kind from an index folder."""

from __future__ import annotations

import os
from typing import Literal

from unirag.retrieval.base import Retriever

Kind = Literal["dense", "bm25", "hybrid"]


def load_retriever(path: str | os.PathLike, kind: Kind = "dense", encoder=None, verify: bool = True) -> Retriever:
    """``dense`` (FAISS + encoder), ``bm25`` or ``hybrid`` (RRF of both) over index folder ``path``."""
    from unirag.retrieval.bm25 import BM25Retriever
    from unirag.retrieval.dense import DenseRetriever
    from unirag.retrieval.hybrid import HybridRetriever

    if kind == "dense":
        return DenseRetriever.load(path, encoder=encoder, verify=verify)
    if kind == "bm25":
        return BM25Retriever.load(path)
    if kind == "hybrid":
        return HybridRetriever([DenseRetriever.load(path, encoder=encoder, verify=verify), BM25Retriever.load(path)])
    raise ValueError(f"unknown retriever kind {kind!r} (dense, bm25, hybrid)")
