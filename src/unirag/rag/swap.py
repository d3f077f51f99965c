"""The knowledge-update experiment on a small scale: two corpora that disagree on facts, one
model, the index swapped under it (no reload, no retraining).

Corpus A holds the gold passages of FanOutQA questions whose answer appears verbatim in the
passage, plus distractor passages; corpus B is the same with each such answer replaced by another
question's answer (a counterfactual fact). The answers before and after the swap show whether the
model follows its index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from unirag.corpus.passage import Passage


@dataclass
class SwapItem:
    """A question, its fact in corpus A and the replacement fact in corpus B."""

    question: str
    passage_id: str
    fact_a: str
    fact_b: str


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def swap_items(n: int = 12, seed: int = 0) -> list[SwapItem]:
    """``n`` FanOutQA leaves (both splits) with a short answer found verbatim in their gold passage,
    each paired with a counterfactual answer: the answer of another leaf asked the same way (same
    first three words), so the swapped fact is of the same kind."""
    import random

    from unirag.data.fanoutqa import fanoutqa_leaves
    from unirag.data.wiki import wiki_summaries

    summaries = wiki_summaries()
    pool = []
    for leaf in fanoutqa_leaves():
        text = summaries[leaf.evidence_title].get("extract", "")
        ans = [a for a in leaf.answers if 2 < len(a) <= 30 and a in text]
        if ans and leaf.evidence_title not in {p.passage_id for p in pool}:
            pool.append(SwapItem(leaf.question, leaf.evidence_title, ans[0], ""))
    groups: dict[str, list[SwapItem]] = {}
    for item in pool:                       # same question shape -> facts of the same kind
        groups.setdefault(" ".join(item.question.lower().split()[:3]), []).append(item)
    out = []
    for group in groups.values():
        facts = list(dict.fromkeys(_norm(g.fact_a) for g in group))
        if len(facts) < 2:
            continue
        for i, item in enumerate(group):
            other = [g.fact_a for g in group[i + 1:] + group[:i] if _norm(g.fact_a) != _norm(item.fact_a)]
            item.fact_b = other[0]
            out.append(item)
    random.Random(seed).shuffle(out)
    pool = out[:n]
    return pool


def build_swap_indexes(items: list[SwapItem], out: str | os.PathLike, distractors: int = 300,
                       encoder: str = "all-minilm-l6-v2") -> tuple[Path, Path]:
    """Write ``out/corpus-a`` and ``out/corpus-b`` index folders (same encoder, same passages except
    for the swapped facts)."""
    from unirag.data.wiki import wiki_passages
    from unirag.models.encoder import Encoder
    from unirag.retrieval.build import build_index

    gold = {it.passage_id: it for it in items}
    base = [p for p in wiki_passages() if p.id in gold]
    extra = [p for p in wiki_passages(limit=distractors + len(gold)) if p.id not in gold][:distractors]
    edited = [Passage(p.id, p.text.replace(gold[p.id].fact_a, gold[p.id].fact_b), p.title, dict(p.meta))
              for p in base]
    enc = Encoder.from_pretrained(encoder)
    out = Path(out)
    a = build_index(base + extra, out / "corpus-a", encoder=enc, bm25=False, progress=False)
    b = build_index(edited + extra, out / "corpus-b", encoder=enc, bm25=False, progress=False)
    return a, b


def run_swap(model, items: list[SwapItem], index_a: str | os.PathLike, index_b: str | os.PathLike,
             **generate_kwargs) -> dict:
    """Answer every question on index A, hot-swap to B, answer again; count answers that state each fact."""
    rows = []
    qs = [it.question for it in items]
    model.swap_index(index_a)
    before = model.generate(qs, attribution=False, **generate_kwargs)
    model.swap_index(index_b)
    after = model.generate(qs, attribution=False, **generate_kwargs)
    for it, x, y in zip(items, before, after):
        rows.append({"question": it.question, "fact_a": it.fact_a, "fact_b": it.fact_b,
                     "answer_before": x.answer, "answer_after": y.answer,
                     "before_states_a": _norm(it.fact_a) in _norm(x.answer),
                     "after_states_b": _norm(it.fact_b) in _norm(y.answer),
                     "after_states_a": _norm(it.fact_a) in _norm(y.answer)})
    n = max(len(rows), 1)
    return {"n": len(rows),
            "before_states_a": sum(r["before_states_a"] for r in rows) / n,
            "after_states_b": sum(r["after_states_b"] for r in rows) / n,
            "after_still_states_a": sum(r["after_states_a"] for r in rows) / n,
            "rows": rows}
