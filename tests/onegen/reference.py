"""Plain (loop) reference implementations the tests compare the vectorised code against."""

from __future__ import annotations

import math

import torch


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def ref_bpr(q, d, pos, neg, cand) -> float:
    """-log sigmoid(s+ - s-) averaged over all (positive, negative) pairs, loops only."""
    terms = []
    for r in range(q.shape[0]):
        hard = [j for j in range(d.shape[0]) if neg[r, j] and not pos[r, j]]
        negs = hard or [j for j in range(d.shape[0]) if cand[r, j] and not pos[r, j]]
        for p in range(d.shape[0]):
            if not pos[r, p]:
                continue
            for n in negs:
                x = cos(q[r], d[p]) - cos(q[r], d[n])
                terms.append(-math.log(1 / (1 + math.exp(-x))))
    return sum(terms) / len(terms) if terms else 0.0


def ref_infonce(q, d, pos, neg, cand, t) -> float:
    """Cross-entropy of each positive against the in-batch (right kind) and hard negatives."""
    terms = []
    for r in range(q.shape[0]):
        others = [j for j in range(d.shape[0]) if (cand[r, j] or neg[r, j]) and not pos[r, j]]
        for p in range(d.shape[0]):
            if not pos[r, p]:
                continue
            logits = [cos(q[r], d[p]) / t] + [cos(q[r], d[j]) / t for j in others]
            m = max(logits)
            lse = m + math.log(sum(math.exp(v - m) for v in logits))
            terms.append(lse - logits[0])
    return sum(terms) / len(terms) if terms else 0.0
