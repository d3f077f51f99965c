"""Dense retrieval: an embedding function embeds queries, a FAISS ``Index`` finds the nearest passages."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unirag.corpus.store import DocStore
from unirag.index.errors import IndexMismatchError
from unirag.index.folder import IndexFolder
from unirag.index.vector import Index
from unirag.models.registry import canonical_name
from unirag.retrieval.base import SearchResult


class DenseRetriever:
    """Bi-encoder retrieval by maximum inner product over an index folder.

    ``encoder`` is the embedding function of the index (a sentence encoder, or a OneGen model's
    :class:`~unirag.onegen.docindex.OneGenEncoder`); queries use its ``encode_queries`` when it
    has one, else ``encode``. An :class:`~unirag.models.onnx_encoder.OnnxEncoder` embeds the
    queries without torch; ``encoder`` then loads the torch encoder on first use (to embed
    passages or count tokens)."""

    def __init__(self, encoder, index: Index, store: DocStore, path: Path | None = None):
        self._parts = (index, store, path)  # swapped as one tuple: readers see old or new, never a mix
        self.encoder = encoder
        if encoder is not None:
            check_encoder(index, encoder)

    @property
    def encoder(self):
        """The index's embedding function (the torch encoder, loaded now if only the ONNX query
        path was)."""
        if self._encoder is None and self._queries is not None:
            from unirag.models.encoder import Encoder

            self._encoder = Encoder.from_pretrained(self._queries.spec)
        return self._encoder

    @property
    def query_encoder(self):
        """What embeds the queries: the ONNX Runtime encoder when one was loaded, else ``encoder``."""
        return self._queries or self.encoder

    @property
    def corpus_encoder(self):
        """What embeds new passages (document updates): the ONNX Runtime encoder when the queries
        run on it (the same vectors to float32 rounding, without loading torch's), else ``encoder``."""
        return self.query_encoder

    @encoder.setter
    def encoder(self, encoder) -> None:
        from unirag.models.onnx_encoder import OnnxEncoder

        onnx = isinstance(encoder, OnnxEncoder)
        self._queries = encoder if onnx else None
        self._encoder = None if onnx else encoder

    def __len__(self) -> int:
        return len(self._parts[0])

    @property
    def index(self) -> Index:
        """The FAISS index."""
        return self._parts[0]

    @property
    def store(self) -> DocStore:
        """The doc store (row -> passage)."""
        return self._parts[1]

    @property
    def path(self) -> Path | None:
        """The index folder."""
        return self._parts[2]

    @classmethod
    def from_parts(cls, encoder, index: Index, path: str | os.PathLike) -> DenseRetriever:
        """A retriever over an already loaded ``index`` of folder ``path`` (opens its doc store)."""
        return cls(encoder, index, DocStore(IndexFolder(path).docs_dir), Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, encoder=None, verify: bool = True) -> DenseRetriever:
        """Open an index folder; the encoder defaults to the one named in its manifest. A shard set
        (folder or ``ray://`` URI) opens a :class:`~unirag.distributed.sharded.ShardedRetriever`,
        which speaks the same verbs."""
        from unirag.distributed.sharded import is_sharded
        from unirag.models.encoder import Encoder

        if is_sharded(path):
            from unirag.distributed.sharded import open_sharded

            return open_sharded(path, encoder=encoder, verify=verify)  # type: ignore[return-value]

        path = Path(path)
        index = Index.load(path, verify=verify)
        if encoder is None:
            if index.manifest.encoder_info.get("kind") == "onegen":
                raise IndexMismatchError(f"{path} holds a OneGen model's vectors: open it with the onegen engine "
                                         "(its queries come from the model itself)")
            from unirag.models.onnx_encoder import query_encoder

            encoder = query_encoder(index.manifest.encoder)
        elif isinstance(encoder, str):
            encoder = Encoder.from_pretrained(encoder)
        return cls.from_parts(encoder, index, path)

    def swap_index(self, path: str | os.PathLike, verify: bool = True) -> None:
        """Replace index and doc store by another folder built with the same encoder (no model reload).

        The new pair is installed by one assignment, so a concurrent search sees the old pair or the
        new one, never a mix."""
        index = Index.load(path, verify=verify)
        check_encoder(index, self.query_encoder)
        self._parts = (index, DocStore(IndexFolder(path).docs_dir), Path(path))
        # the old store stays open for searches already under way; it closes when collected

    def search_vectors(self, qvecs: np.ndarray, k: int = 10, return_vectors: bool = False,
                       exclude: Sequence[set[int]] | None = None) -> SearchResult:
        """Search with precomputed query vectors ``[n, dim]``; ``exclude[i]`` holds doc-store rows
        that query ``i`` must not return (the next-best rows take their places; ``-1`` pads)."""
        index, store, _ = self._parts
        if not exclude or not any(exclude):
            scores, rows = index.search(qvecs, k)
        else:
            extra = max(len(e) for e in exclude)
            s, r = index.search(qvecs, k + extra)
            scores = np.full((len(r), k), -np.inf, dtype=np.float32)
            rows = np.full((len(r), k), -1, dtype=np.int64)
            for i in range(len(r)):
                ex = exclude[i] if i < len(exclude) else set()
                keep = [j for j in range(r.shape[1]) if r[i, j] >= 0 and int(r[i, j]) not in ex][:k]
                scores[i, : len(keep)], rows[i, : len(keep)] = s[i, keep], r[i, keep]
        vectors = index.reconstruct(rows) if return_vectors else None
        ids = [store.ids(r) for r in rows]
        return SearchResult(ids=ids, scores=scores, rows=rows, vectors=vectors, store=store)

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors ``[n, dim]`` from the index's embedding function."""
        enc = self.query_encoder
        fn = getattr(enc, "encode_queries", None)
        return fn(list(queries)) if fn is not None else enc.encode(list(queries), batch_size=64)

    def search(self, queries: list[str], k: int = 10, return_vectors: bool = False) -> SearchResult:
        """Top-``k`` passages for each query string."""
        return self.search_vectors(self.embed_queries(queries), k, return_vectors)


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
