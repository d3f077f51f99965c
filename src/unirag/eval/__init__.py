"""Evaluation: retrieval metrics (ir-measures), QA exact match / F1, linking F1, reports."""

from unirag.eval.retrieval import (
    RetrievalQuery,
    evaluate_retrieval,
    fanoutqa_retrieval_queries,
    read_retrieval_queries,
    retrieval_metrics,
)

__all__ = [
    "RetrievalQuery",
    "evaluate_retrieval",
    "fanoutqa_retrieval_queries",
    "read_retrieval_queries",
    "retrieval_metrics",
]
