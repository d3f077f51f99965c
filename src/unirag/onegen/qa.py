"""Question answering with the OneGen engine: single- and multi-hop, answer extraction, scoring.

Multi-hop needs no special machinery: the model writes (sub-)questions and emits the query token
whenever it needs evidence; each query token retrieves from the index with the hidden state of
that position, the passage lands in the cache, and the model answers after its last retrieval.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unirag.onegen.engine import EngineModel, OneGenEngine, Output, SamplingParams

PASSAGE_WORDS = 48  # passages are cut like the training data (unirag.onegen.datasets, passage_words)
_ANSWER_CUE = re.compile(r"(?:final answer|answer)\s*[:：]\s*", re.IGNORECASE)


@dataclass
class QAItem:
    """A question with its gold answers and, when known, the ids of its evidence passages."""

    id: str
    question: str
    answers: list[str]
    evidence: list[str] = field(default_factory=list)


@dataclass
class QAResult:
    """The extracted ``answer``, the full generated ``text`` and the retrieval trace."""

    id: str
    question: str
    answer: str
    text: str
    sources: list[str]
    trace: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return dict(self.__dict__)


def qa_prompt(model: Any, question: str) -> str:
    """The chat prompt of ``question`` (``OneGenModel.chat_prompt`` when the model has one)."""
    if hasattr(model, "chat_prompt"):
        return model.chat_prompt(question)
    tok = EngineModel.wrap(model).tokenizer
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
    return f"user: {question}\nassistant: "


def extract_answer(text: str) -> str:
    """The answer part of a generation: after the last ``Answer:`` cue if any, else its last
    non-empty line; surrounding quotes, passage markers, citation marks like ``[1]`` and a final
    period are removed."""
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        text = text[cues[-1].end():]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    ans = (lines[-1] if not cues else lines[0]) if lines else ""
    ans = re.sub(r"</?passage>|\[\d+(?:,\s*\d+)*\]", "", ans).strip()
    prev = None
    while prev != ans:
        prev = ans
        ans = ans.strip().strip('"\'“”').strip()
        if ans.endswith(".") and not ans.endswith(".."):
            ans = ans[:-1]
    return ans


def tail_after_retrieval(out: Output, tokenizer: Any) -> str:
    """Text generated after the last retrieval (the whole text when none happened)."""
    if not out.trace:
        return out.text
    return tokenizer.decode(out.token_ids[out.trace[-1].step + 1:], skip_special_tokens=True)


def answer_questions(engine: OneGenEngine, model: Any, questions: Sequence[str], params: SamplingParams,
                     batch_size: int = 8, progress: bool = False) -> list[tuple[Output, str]]:
    """Generate for every question in batches; ``(output, extracted answer)`` per question."""
    prompts = [qa_prompt(model, q) for q in questions]
    results: list[tuple[Output, str]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="answering", unit=" q")
    for s in range(0, len(prompts), batch_size):
        for out in engine.generate(prompts[s : s + batch_size], params):
            tail = tail_after_retrieval(out, engine.model.tokenizer)
            results.append((out, extract_answer(tail) or extract_answer(out.text)))
        if bar is not None:
            bar.update(min(batch_size, len(prompts) - s))
    if bar is not None:
        bar.close()
    return results


def hop_recall(trace_ids: Sequence[Sequence[str]], evidence: Sequence[str]) -> dict[str, Any]:
    """Per-hop evidence hits for one question: ``hops[i]`` is 1 when the i-th retrieval inserted a
    gold passage not found by an earlier hop; ``recall`` is the share of gold passages inserted."""
    gold, found, hops = set(evidence), set(), []
    for ids in trace_ids:
        new = (set(ids) & gold) - found
        hops.append(int(bool(new)))
        found |= new
    return {"hops": hops, "recall": len(found) / len(gold) if gold else None}


def score(items: Sequence[QAItem], answers: Sequence[str], traces: Sequence[Sequence[Sequence[str]]] | None,
          ) -> dict[str, Any]:
    """EM / F1 (SQuAD normalisation, :mod:`unirag.eval.qa`) and evidence recall (overall and per hop)."""
    from unirag.eval.qa import qa_scores

    out: dict[str, Any] = dict(qa_scores(list(answers), [it.answers for it in items]))
    if traces is not None:
        rec = [hop_recall(t, it.evidence) for t, it in zip(traces, items) if it.evidence]
        vals = [r["recall"] for r in rec if r["recall"] is not None]
        out["evidence_recall"] = 100.0 * sum(vals) / len(vals) if vals else None
        depth = max((len(r["hops"]) for r in rec), default=0)
        out["hop_hit_rate"] = [100.0 * sum(r["hops"][h] for r in rec if len(r["hops"]) > h)
                               / max(1, sum(len(r["hops"]) > h for r in rec)) for h in range(depth)]
        out["mean_retrievals"] = sum(len(t) for t in traces) / max(1, len(traces))
    return out


def run_onegen_qa(engine: OneGenEngine, model: Any, items: Sequence[QAItem], params: SamplingParams,
                  batch_size: int = 8, progress: bool = False) -> tuple[dict[str, Any], list[QAResult]]:
    """Answer ``items`` with retrieval inside generation; ``(metrics, per-question results)``."""
    pairs = answer_questions(engine, model, [it.question for it in items], params, batch_size, progress)
    results = [QAResult(it.id, it.question, ans, out.text, out.sources, [r.to_dict() for r in out.trace])
               for it, (out, ans) in zip(items, pairs)]
    traces = [[r.inserted for r in out.trace] for out, _ in pairs]
    return score(items, [r.answer for r in results], traces), results


def fanoutqa_items(kind: str = "single", split: str = "heldout", limit: int | None = None) -> list[QAItem]:
    """FanOutQA items of ``unirag.data.fanoutqa_split()``: ``single`` = sub-questions whose
    evidence page is a corpus passage; ``multi`` = top-level questions, evidence = their leaves'
    pages found in the corpus."""
    from unirag.data import fanoutqa_split, wiki_summaries

    train, heldout = fanoutqa_split()
    questions = heldout if split == "heldout" else train
    titles = set(wiki_summaries())
    items: list[QAItem] = []
    for q in questions:
        if kind == "multi":
            ev = [lf.evidence_title for lf in q.leaves if lf.evidence_title in titles]
            items.append(QAItem(q.id, q.question, q.answers, list(dict.fromkeys(ev))))
        else:
            items += [QAItem(lf.id, lf.question, lf.answers, [lf.evidence_title])
                      for lf in q.leaves if lf.evidence_title in titles]
    return items[:limit] if limit else items
