"""Retrievers: one protocol (``search(queries, k)``), dense (FAISS), BM25 (bm25s), hybrid (RRF)."""

from unirag.retrieval.base import Retriever, SearchResult
from unirag.retrieval.build import BuildConfig, build_index, default_index_dir, ensure_default_index
from unirag.retrieval.bm25 import BM25Retriever
from unirag.retrieval.dense import DenseRetriever
from unirag.retrieval.hybrid import HybridRetriever, reciprocal_rank_fusion
from unirag.retrieval.loader import RETRIEVER_KINDS, check_retriever_kind, load_retriever
from unirag.retrieval.update import UnknownPassageError, UpdateResult, update_index

__all__ = [
    "BM25Retriever",
    "RETRIEVER_KINDS",
    "DenseRetriever",
    "HybridRetriever",
    "Retriever",
    "SearchResult",
    "UnknownPassageError",
    "UpdateResult",
    "BuildConfig",
    "build_index",
    "check_retriever_kind",
    "default_index_dir",
    "ensure_default_index",
    "load_retriever",
    "reciprocal_rank_fusion",
    "update_index",
]
