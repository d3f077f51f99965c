"""Open a retriever of any kind from an index folder."""

from __future__ import annotations

import os
from typing import Literal

from unirag.config.errors import UsageError
from unirag.retrieval.base import Retriever

Kind = Literal["dense", "bm25", "hybrid"]
RETRIEVER_KINDS: tuple[str, ...] = ("dense", "bm25", "hybrid")


def check_retriever_kind(kind: str, option: str = "kind") -> Kind:
    """Return ``kind`` if it names a retriever, else raise :class:`UsageError` naming ``option``."""
    if kind not in RETRIEVER_KINDS:
        raise UsageError(f"{option}: unknown retriever kind {kind!r} (choose from {', '.join(RETRIEVER_KINDS)})")
    return kind  # type: ignore[return-value]


def load_retriever(path: str | os.PathLike, kind: Kind = "dense", encoder=None, verify: bool = True) -> Retriever:
    """``dense`` (FAISS + encoder), ``bm25`` or ``hybrid`` (RRF of both) over index folder ``path``;
    a shard-set folder or a ``ray://`` URI opens a :class:`~unirag.distributed.sharded.ShardedRetriever`.

    The kind and the folder's parts are checked before any model is loaded."""
    from unirag.index.folder import IndexFolder
    from unirag.retrieval.bm25 import BM25Retriever
    from unirag.retrieval.dense import DenseRetriever
    from unirag.retrieval.hybrid import HybridRetriever

    check_retriever_kind(kind)
    from unirag.distributed.sharded import is_sharded

    if is_sharded(path):  # a shard set (folder or ray:// URI): dense search on Ray shard actors
        if kind != "dense":
            raise UsageError(f"a sharded index serves dense search only, not {kind!r}")
        from unirag.distributed.sharded import open_sharded

        return open_sharded(path, encoder=encoder, verify=verify)
    IndexFolder(path).require(kind)
    if kind == "dense":
        return DenseRetriever.load(path, encoder=encoder, verify=verify)
    if kind == "bm25":
        return BM25Retriever.load(path, verify=verify)
    return HybridRetriever([DenseRetriever.load(path, encoder=encoder, verify=verify),
                            BM25Retriever.load(path, verify=verify)])
