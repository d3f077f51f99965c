"""The one QA evaluation harness: any engine, through the door, on any QA set.

``evaluate_qa(rag, items, params)`` answers every item with ``rag.ask_batch`` and scores the
answers: exact match and F1 (SQuAD normalisation, on ``Answer.short``), evidence recall (share of
an item's evidence passages among the passages the engine gave its generator), passages used,
retrievals per question and the per-hop hit rate, and latency p50 / p95 (each question's share
of its batch's wall time; batch size 1 gives true per-question latency).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unirag.data.qa import QAItem
from unirag.eval.qa import exact_match, token_f1


def hop_recall(trace_ids: Sequence[Sequence[str]], evidence: Sequence[str]) -> dict[str, Any]:
    """Per-hop evidence hits for one question: ``hops[i]`` is 1 when the i-th retrieval gave a gold
    passage not found by an earlier one; ``recall`` is the share of gold passages found."""
    gold, found, hops = set(evidence), set(), []
    for ids in trace_ids:
        new = (set(ids) & gold) - found
        hops.append(int(bool(new)))
        found |= new
    return {"hops": hops, "recall": len(found) / len(gold) if gold else None}


def score_answers(items: Sequence[QAItem], answers: Sequence[Any]) -> dict[str, Any]:
    """Metrics of ``answers`` (:class:`~unirag.outputs.Answer`) against ``items``, in percent."""
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    n = max(1, len(items))
    preds = [a.short or a.text for a in answers]
    out: dict[str, Any] = {
        "n": len(items),
        "em": 100.0 * sum(exact_match(p, it.answers) for p, it in zip(preds, items)) / n,
        "f1": 100.0 * sum(token_f1(p, it.answers) for p, it in zip(preds, items)) / n,
    }
    rec = [hop_recall([t.used for t in a.trace], it.evidence) for a, it in zip(answers, items) if it.evidence]
    vals = [r["recall"] for r in rec if r["recall"] is not None]
    out["evidence_recall"] = 100.0 * sum(vals) / len(vals) if vals else None
    out["n_with_evidence"] = len(vals)
    depth = max((len(r["hops"]) for r in rec), default=0)
    out["hop_hit_rate"] = [100.0 * sum(r["hops"][h] for r in rec if len(r["hops"]) > h)
                           / max(1, sum(len(r["hops"]) > h for r in rec)) for h in range(depth)]
    out["passages_used"] = sum(len(a.retrieved_ids) for a in answers) / n
    out["mean_retrievals"] = sum(len(a.trace) for a in answers) / n
    lat = np.array([a.timings.total for a in answers] or [0.0])
    out["latency_p50"], out["latency_p95"] = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
    out["completion_tokens"] = sum(a.usage.completion_tokens for a in answers) / n
    return out


def evaluate_qa(rag: Any, items: Sequence[QAItem], params: Any = None, batch_size: int = 8,
                progress: bool = False, predictions: str | os.PathLike | None = None) -> dict[str, Any]:
    """Answer ``items`` with ``rag`` (a :class:`unirag.RAG`) and score them; with ``predictions``,
    write one JSON line per item (the answer's stable schema plus ``id``, ``gold``, ``em``, ``f1``).
    Returns the metrics plus ``seconds`` (wall time of the whole run)."""
    t0 = time.perf_counter()
    answers: list[Any] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"answering ({rag.engine.name})", unit=" q")
    for s in range(0, len(items), batch_size):
        chunk = items[s : s + batch_size]
        answers += rag.ask_batch([it.question for it in chunk], params, batch_size=batch_size)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    metrics = score_answers(items, answers)
    metrics["seconds"] = time.perf_counter() - t0
    if predictions is not None:
        from unirag.config.base import atomic_write_text

        path = Path(predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for it, a in zip(items, answers):
            pred = a.short or a.text
            row = {"id": it.id, "gold": it.answers, "evidence": it.evidence, "em": exact_match(pred, it.answers),
                   "f1": token_f1(pred, it.answers)} | a.to_dict()
            lines.append(json.dumps(row, ensure_ascii=False))
        atomic_write_text(path, "\n".join(lines) + "\n")
    return metrics
