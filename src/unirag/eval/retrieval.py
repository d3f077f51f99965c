"""Retrieval evaluation: recall@k, MRR@k and nDCG@k computed by ``ir-measures`` (trec_eval)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from unirag.corpus.jsonl import iter_jsonl
from unirag.corpus.passage import CorpusError


@dataclass
class RetrievalQuery:
    """A question and the ids of the passages that answer it."""

    id: str
    text: str
    gold: list[str]


def read_retrieval_queries(path: str | os.PathLike) -> list[RetrievalQuery]:
    """JSONL with ``id``, ``question`` (or ``query``/``text``) and ``gold`` (or ``positive_ids``): a list of passage ids."""
    out = []
    for lineno, row in iter_jsonl(path):
        text = next((row[k] for k in ("question", "query", "text") if k in row), None)
        gold = next((row[k] for k in ("gold", "positive_ids", "gold_ids") if k in row), None)
        if not isinstance(text, str):
            raise CorpusError(f"{path}:{lineno}: missing field 'question'")
        if isinstance(gold, str):
            gold = [gold]
        if not isinstance(gold, list) or not gold:
            raise CorpusError(f"{path}:{lineno}: field 'gold' must be a non-empty list of passage ids")
        out.append(RetrievalQuery(str(row.get("id", lineno)), text, [str(g) for g in gold]))
    return out


def fanoutqa_retrieval_queries(split: str = "all") -> list[RetrievalQuery]:
    """FanOutQA dev leaf sub-questions whose evidence page is in the default corpus (558 for ``all``;
    ``train`` / ``heldout`` follow :func:`unirag.data.fanoutqa_split`)."""
    from unirag.data.fanoutqa import fanoutqa_qa

    if split not in ("all", "train", "heldout"):
        from unirag.config.errors import UsageError

        raise UsageError(f"split: unknown split {split!r} (all, train, heldout)")
    return [RetrievalQuery(it.id, it.question, it.evidence) for it in fanoutqa_qa("single", split)]


def retrieval_metrics(gold: dict[str, list[str]], ranked: dict[str, list[str]], ks=(1, 5, 10, 20)) -> dict[str, float]:
    """Mean recall@k, MRR@k (RR@k) and nDCG@k over queries; ``ranked`` lists ids best first.

    Scores given to trec_eval are ``n - rank`` so that its tie-breaking never reorders our ranking.
    """
    import ir_measures
    from ir_measures import RR, R, nDCG

    qrels = [ir_measures.Qrel(qid, did, 1) for qid, ids in gold.items() for did in ids]
    run = []
    for qid, ids in ranked.items():
        seen = set()
        for rank, did in enumerate(ids):
            if did and did not in seen:
                seen.add(did)
                run.append(ir_measures.ScoredDoc(qid, did, float(len(ids) - rank)))
    measures = [R @ k for k in ks] + [RR @ k for k in ks] + [nDCG @ k for k in ks]
    agg = ir_measures.calc_aggregate(measures, qrels, run)
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float(agg.get(R @ k, 0.0))
        out[f"mrr@{k}"] = float(agg.get(RR @ k, 0.0))
        out[f"ndcg@{k}"] = float(agg.get(nDCG @ k, 0.0))
    return out


def evaluate_retrieval(retriever, queries: list[RetrievalQuery], ks=(1, 5, 10, 20), batch_size: int = 64) -> dict:
    """Search every query with ``retriever`` (top ``max(ks)``) and score against the gold ids."""
    depth = max(ks)
    ranked: dict[str, list[str]] = {}
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        res = retriever.search([q.text for q in batch], depth)
        for q, ids in zip(batch, res.ids):
            ranked[q.id] = list(ids)
    metrics = retrieval_metrics({q.id: q.gold for q in queries}, ranked, ks)
    return {"n_queries": len(queries), **metrics}
