"""Hard-negative mining for OneGen training data: BM25 over the document store, or the current model's
own vectors. The query text of a retrieval is the assistant text since the previous passage (the
sub-question the model wrote), or the last user message when that is empty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from unirag.onegen.config import OneGenConfig
from unirag.onegen.data import OneGenExample, retrieval_roles_in


def retrieval_queries(ex: OneGenExample, config: OneGenConfig) -> list[str]:
    """One query text per retrieval token of ``ex`` (see the module docstring)."""
    out: list[str] = []
    user = ""
    marks = [config.token(r) for r in config.retrieval_roles]
    for m in ex.messages:
        if m["role"] == "user":
            user = m["content"]
        if m["role"] != "assistant":
            continue
        text = m["content"]
        for _ in retrieval_roles_in(text, config):
            cut, mark = min((text.find(t), t) for t in marks if text.find(t) >= 0)
            seg = text[:cut]
            end = seg.rfind(config.passage_end)
            seg = seg[end + len(config.passage_end):] if end >= 0 else seg
            out.append(seg.strip() if len(seg.strip()) > 3 else user)
            text = text[cut + len(mark):]
    return out


def retrieval_contexts(ex: OneGenExample, tokenizer: Any, config: OneGenConfig) -> list[str]:
    """For each retrieval token: the rendered conversation up to and including it (what the model
    has seen when it writes the token), usable with ``OneGenModel.query_vectors``."""
    from unirag.onegen.collator import render_prompt

    out: list[str] = []
    for i, m in enumerate(ex.messages):
        if m["role"] != "assistant":
            continue
        prefix = render_prompt(tokenizer, ex.messages[:i])
        text = m["content"]
        start = 0
        for role in retrieval_roles_in(text, config):
            tok = config.token(role)
            j = text.find(tok, start)
            out.append(prefix + text[: j + len(tok)])
            start = j + len(tok)
    return out


def _attach(examples: list[OneGenExample], ranked: list[list[str]], k: int) -> int:
    n, q = 0, 0
    for ex in examples:
        for r in ex.retrievals:
            if not r.positives:  # an LM-only retrieval has no contrastive term to sharpen
                q += 1
                continue
            hits = [pid for pid in ranked[q] if pid not in r.positives and pid not in r.negatives]
            r.negatives = (r.negatives + hits)[: max(k, len(r.negatives))]
            n += len(r.negatives)
            q += 1
    return n


def mine_bm25_negatives(examples: list[OneGenExample], docs: Mapping[str, str], k: int = 3,
                        config: OneGenConfig | None = None, depth: int = 20) -> int:
    """Add up to ``k`` BM25 hard negatives (top non-positive hits) to every retrieval, in place.
    Returns the number of negatives now attached."""
    from unirag.retrieval.bm25 import rank_texts

    config = config or OneGenConfig()
    ids = list(docs)
    queries = [q for ex in examples for q in retrieval_queries(ex, config)]
    ranked = rank_texts([docs[i] for i in ids], queries, depth) if queries else []
    return _attach(examples, [[ids[r] for r in rows] for rows in ranked], k)


def mine_model_negatives(model: Any, examples: list[OneGenExample], docs: Mapping[str, str], k: int = 3,
                         depth: int = 20, batch_size: int = 32, progress: bool = False) -> int:
    """Add up to ``k`` hard negatives ranked by the current OneGen model (its query-token vectors
    against its document vectors), in place. Returns the number of negatives now attached."""
    ids = list(docs)
    dvec = model.embed_documents([docs[i] for i in ids], batch_size=batch_size, progress=progress)
    contexts = [c for ex in examples for c in retrieval_contexts(ex, model.tokenizer, model.config)]
    qvec = model.query_vectors(contexts) if contexts else np.zeros((0, dvec.shape[1]), np.float32)
    from unirag.index.vector import Index

    index = Index(dvec.shape[1], "Flat", "ip")  # the one search verb, exact inner product
    index.add(dvec)
    _, top = index.search(qvec, min(depth, len(ids)))
    return _attach(examples, [[ids[j] for j in row if j >= 0] for row in top], k)
