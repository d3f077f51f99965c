"""The retriever protocol and its result type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from unirag.corpus.passage import Passage
from unirag.corpus.store import DocStore


@dataclass
class SearchResult:
    """Top-k hits for a batch of queries, best first.

    ``rows`` are doc-store rows (``-1`` where fewer than k hits), ``ids`` the passage ids,
    ``scores`` the retriever's scores; ``vectors`` (``[n, k, dim]``) the document vectors for
    dense retrievers when asked for (RAG training scores them against a trainable query encoder).
    """

    ids: list[list[str]]
    scores: np.ndarray
    rows: np.ndarray
    vectors: np.ndarray | None = None
    store: DocStore | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def passages(self, i: int) -> list[Passage]:
        """The passages hit by query ``i``."""
        if self.store is None:
            raise ValueError("this result carries no doc store")
        return [self.store[int(r)] for r in self.rows[i] if r >= 0]

    def hits(self, i: int) -> list[dict]:
        """Query ``i``'s hits as JSON-ready dicts: rank, score, id, title, text."""
        return [{"rank": rank, "score": float(s), "id": p.id, "title": p.title, "text": p.text}
                for rank, (s, p) in enumerate(zip(self.scores[i], self.passages(i)), 1)]


@runtime_checkable
class Retriever(Protocol):
    """Anything that maps query strings to ranked passages of a doc store."""

    store: DocStore

    def search(self, queries: list[str], k: int = 10) -> SearchResult:
        """Top-``k`` passages for each query."""
        ...
