"""Question-answering metrics as in SQuAD: answer normalisation, exact match, token F1 (max over gold)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from unirag.data.qa import answer_in_text, normalize_answer  # noqa: F401  (normalisation lives with the QA sets)


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: str | Sequence[str]) -> float:
    """Bag-of-tokens F1 between the normalised prediction and the best-matching gold answer."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    return max((_f1(prediction, g) for g in golds), default=0.0)


def qa_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1 (in percent) over aligned predictions and gold-answer lists."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answer lists")
    n = max(len(predictions), 1)
    em = sum(exact_match(p, g) for p, g in zip(predictions, golds))
    f1 = sum(token_f1(p, g) for p, g in zip(predictions, golds))
    return {"em": 100.0 * em / n, "f1": 100.0 * f1 / n, "n": float(len(predictions))}
