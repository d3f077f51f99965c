"""Dense retrieval: an encoder embeds queries, a FAISS ``Index`` finds the nearest passages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unirag.corpus.store import DocStore
from unirag.index.errors import IndexMismatchError
from unirag.index.folder import IndexFolder
from unirag.index.vector import Index
from unirag.models.registry import canonical_name
from unirag.retrieval.base import SearchResult


class DenseRetriever:
    """Bi-encoder retrieval by maximum inner product over an index folder."""

    def __init__(self, encoder, index: Index, store: DocStore):
        self.encoder = encoder
        self.index = index
        self.store = store
        if encoder is not None:
            check_encoder(index, encoder)

    @classmethod
    def load(cls, path: str | os.PathLike, encoder=None, verify: bool = True) -> DenseRetriever:
        """Open an index folder; the encoder defaults to the one named in its manifest."""
        from unirag.models.encoder import Encoder

        path = Path(path)
        index = Index.load(path, verify=verify)
        if encoder is None:
            encoder = Encoder.from_pretrained(index.manifest.encoder)
        elif isinstance(encoder, str):
            encoder = Encoder.from_pretrained(encoder)
        return cls(encoder, index, DocStore(IndexFolder(path).docs_dir))

    def swap_index(self, path: str | os.PathLike, verify: bool = True) -> None:
        """Replace index and doc store by another folder built with the same encoder (no model reload)."""
        index = Index.load(path, verify=verify)
        check_encoder(index, self.encoder)
        old = self.store
        self.index, self.store = index, DocStore(IndexFolder(path).docs_dir)
        old.close()

    def search_vectors(self, qvecs: np.ndarray, k: int = 10, return_vectors: bool = False) -> SearchResult:
        """Search with precomputed query vectors ``[n, dim]``."""
        scores, rows = self.index.search(qvecs, k)
        vectors = self.index.reconstruct(rows) if return_vectors else None
        ids = [self.store.ids(r) for r in rows]
        return SearchResult(ids=ids, scores=scores, rows=rows, vectors=vectors, store=self.store)

    def search(self, queries: list[str], k: int = 10, return_vectors: bool = False) -> SearchResult:
        """Top-``k`` passages for each query string."""
        qvecs = self.encoder.encode(list(queries), batch_size=64)
        return self.search_vectors(qvecs, k, return_vectors)


def check_encoder(index: Index, encoder) -> None:
    """Refuse an encoder other than the one that built the index, or of another dimension."""
    m = index.manifest
    if encoder.dim != index.dim:
        raise IndexMismatchError(
            f"encoder '{encoder.name}' gives {encoder.dim}-dimensional vectors but the index holds "
            f"{index.dim}-dimensional vectors from '{m.encoder}'"
        )
    if m.encoder and canonical_name(m.encoder) != canonical_name(encoder.name):
        raise IndexMismatchError(
            f"the index was built with encoder '{m.encoder}' but queries come from '{encoder.name}'; "
            f"rebuild the index or pass --encoder {m.encoder}"
        )
