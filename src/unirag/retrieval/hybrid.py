"""Hybrid retrieval: reciprocal rank fusion (Cormack et al. 2009) of several retrievers."""

from __future__ import annotations

import numpy as np

from unirag.retrieval.base import Retriever, SearchResult


def reciprocal_rank_fusion(rankings: list[list[int]], k: int, c: float = 60.0,
                           weights: list[float] | None = None) -> tuple[list[int], list[float]]:
    """Fuse ranked lists of rows: ``score(d) = Σ_r w_r / (c + rank_r(d))`` with 1-based ranks.

    Ties break by the row's best rank, then by row, so the result is deterministic.
    """
    weights = weights or [1.0] * len(rankings)
    score: dict[int, float] = {}
    best: dict[int, int] = {}
    for w, ranking in zip(weights, rankings):
        for rank, row in enumerate(ranking, 1):
            if row < 0:
                continue
            score[row] = score.get(row, 0.0) + w / (c + rank)
            best[row] = min(best.get(row, rank), rank)
    order = sorted(score, key=lambda r: (-score[r], best[r], r))[:k]
    return order, [score[r] for r in order]


class HybridRetriever:
    """RRF over retrievers that share one doc store (e.g. dense + BM25 of one index folder)."""

    def __init__(self, retrievers: list[Retriever], c: float = 60.0, weights: list[float] | None = None,
                 depth: int = 100):
        if not retrievers:
            raise ValueError("HybridRetriever needs at least one retriever")
        self.retrievers = retrievers
        self.store = retrievers[0].store
        self.path = getattr(retrievers[0], "path", None)
        self.c = c
        self.weights = weights
        self.depth = depth

    def search(self, queries: list[str], k: int = 10) -> SearchResult:
        """Fuse each retriever's top-``max(depth, k)`` into a top-``k``; scores are RRF scores."""
        depth = max(self.depth, k)
        results = [r.search(queries, depth) for r in self.retrievers]
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        for i in range(len(queries)):
            order, sc = reciprocal_rank_fusion([res.rows[i].tolist() for res in results], k, self.c, self.weights)
            rows[i, : len(order)] = order
            scores[i, : len(order)] = sc
        ids = [self.store.ids(r) for r in rows]
        return SearchResult(ids=ids, scores=scores, rows=rows, store=self.store)
