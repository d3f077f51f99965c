"""Sparse retrieval: BM25 (Lucene variant) with ``bm25s``, English stop words and Snowball stemming."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from unirag.corpus.store import DocStore
from unirag.index.folder import IndexFolder
from unirag.retrieval.base import SearchResult


def _stemmer():
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # stemming is optional
        return None


def _tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)


def build_bm25(texts: Iterable[str], out: Path, k1: float = 1.5, b: float = 0.75) -> None:
    """Index ``texts`` (row order) with BM25 and save to folder ``out``."""
    import bm25s

    tokens = _tokenize(list(texts))
    model = bm25s.BM25(k1=k1, b=b)
    model.index(tokens, show_progress=False)
    model.save(str(out))


def rank_texts(texts: list[str], queries: list[str], depth: int = 20, k1: float = 1.5,
               b: float = 0.75) -> list[list[int]]:
    """In-memory BM25 (same tokenizer, stop words and stemming as the index): for each query,
    the positions in ``texts`` of its top ``depth`` matches with a positive score, best first."""
    import bm25s

    model = bm25s.BM25(k1=k1, b=b)
    model.index(_tokenize(list(texts)), show_progress=False)
    depth = min(depth, len(texts))
    rows, scores = model.retrieve(_tokenize(list(queries)), k=depth, show_progress=False, n_threads=1)
    return [[int(r) for r, sc in zip(rr, ss) if sc > 0] for rr, ss in zip(rows, scores)]


class BM25Retriever:
    """BM25 over the ``bm25/`` sub-folder of an index folder, sharing its doc store."""

    def __init__(self, model, store: DocStore, path: Path | None = None):
        self.model = model
        self.store = store
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> BM25Retriever:
        """Open the BM25 part of an index folder (built with ``kinds`` including ``bm25``);
        ``verify`` checks the SHA-256 of the ``bm25/`` and ``docs/`` files against the manifest."""
        import bm25s

        from unirag.index.errors import IndexFormatError

        folder = IndexFolder(path)
        manifest = folder.require("bm25")
        if verify:
            folder.verify(manifest, parts=(folder.bm25_dir.name, folder.docs_dir.name))
        try:
            model = bm25s.BM25.load(str(folder.bm25_dir), mmap=True)
        except Exception as exc:  # bm25s raises json / numpy / OS errors on damaged files
            raise IndexFormatError(f"{folder.bm25_dir}: unreadable BM25 index ({type(exc).__name__}: {exc})") from None
        return cls(model, DocStore(folder.docs_dir), folder.path)

    def search(self, queries: list[str], k: int = 10) -> SearchResult:
        """Top-``k`` passages per query by BM25 score (rows -1 where fewer terms match)."""
        k = min(k, len(self.store))
        tokens = _tokenize(list(queries))
        rows = np.full((len(tokens), k), -1, dtype=np.int64)
        scores = np.zeros((len(tokens), k), dtype=np.float32)
        known = [[t for t in q if t in self.model.vocab_dict] for q in tokens]
        todo = [i for i, q in enumerate(known) if q]
        if todo:
            res, sc = self.model.retrieve([known[i] for i in todo], k=k, show_progress=False, n_threads=1)
            for j, i in enumerate(todo):
                hit = sc[j] > 0
                rows[i, : hit.sum()] = res[j][hit]
                scores[i, : hit.sum()] = sc[j][hit]
        ids = [self.store.ids(r) for r in rows]
        return SearchResult(ids=ids, scores=scores, rows=rows, store=self.store)
