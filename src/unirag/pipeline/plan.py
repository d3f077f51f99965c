"""Plan-first multi-hop: the reader lists the articles a question needs, each one is looked up.

Fan-out questions ("the capitals of the five most populous countries") need pages the question
never names, and a small reader asked in the abstract rarely names them. Shown a few worked
examples of similar questions (the nearest by the retriever's own query embedding) with the
articles that answered them, it writes such a list for the new question, in the same format:
``Articles: China; India; United States; ...``. Several plans, each from a different set of
examples, are merged in turn (a name once), which widens what the reader recalls.

Each name is then one retrieval: the passage whose title is that name (case-insensitive) when the
index holds one, else the best passage the retriever finds for it. The loop itself, the budget and
the final answer are :mod:`unirag.pipeline.iterative`'s.

Examples are JSONL lines ``{"question": ..., "articles": [...]}``; the packaged default are the
FanOutQA dev questions of the training split with their decompositions' evidence pages
(:func:`packaged_examples`; the held-out questions are never among them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from unirag.corpus.passage import CorpusError


#: How multi-hop chooses its searches: the reader's follow-up after each hop, or one plan up front.
HOP_MODES = ("followup", "plan")


@dataclass(frozen=True)
class PlanExample:
    """A worked example: a question and the articles that answer it."""

    question: str
    articles: tuple[str, ...]


@lru_cache(maxsize=1)
def packaged_examples(max_articles: int = 16) -> tuple[PlanExample, ...]:
    """FanOutQA dev questions of the training split (``fanoutqa_split()[0]``) with their leaves'
    evidence page titles, in order, at most ``max_articles`` each."""
    from unirag.data.fanoutqa import fanoutqa_split

    out = []
    for q in fanoutqa_split()[0]:
        titles = tuple(dict.fromkeys(lf.evidence_title for lf in q.leaves if lf.evidence_title))[:max_articles]
        if titles:
            out.append(PlanExample(q.question, titles))
    return tuple(out)


def read_examples(path: str | os.PathLike) -> tuple[PlanExample, ...]:
    """Examples from a JSONL file (``question``: str, ``articles``: list of str per line); a bad
    line raises ``CorpusError`` naming the file and line."""
    from unirag.corpus.jsonl import iter_jsonl

    out = []
    for n, row in iter_jsonl(path):
        q, arts = row.get("question"), row.get("articles")
        if not isinstance(q, str) or not q.strip():
            raise CorpusError(f"{path}:{n}: field 'question' must be a non-empty string")
        if not isinstance(arts, list) or not arts or not all(isinstance(a, str) and a.strip() for a in arts):
            raise CorpusError(f"{path}:{n}: field 'articles' must be a non-empty list of strings")
        out.append(PlanExample(q.strip(), tuple(a.strip() for a in arts)))
    if not out:
        raise CorpusError(f"{path}: no plan examples")
    return tuple(out)


def plan_prompt(question: str, examples: Sequence[PlanExample]) -> str:
    """The completion prompt: the examples (least similar first), then the question and the cue."""
    shots = "\n\n".join(f"Question: {ex.question}\nArticles: {'; '.join(ex.articles)}" for ex in examples)
    return f"{shots}\n\nQuestion: {question}\nArticles:"


def parse_plan(text: str, limit: int = 16) -> list[str]:
    """The article names of a reply: its first line split at ``;``, blanks and repeats dropped,
    at most ``limit``; the reader's next ``Question:`` (it may go on in the examples' format) is cut."""
    line = re.split(r"\n|Question:", text.strip(), maxsplit=1)[0]
    names = [n.strip().strip('"\'“”`.').strip() for n in line.split(";")]
    return list(dict.fromkeys(n for n in names if n and re.search(r"\w", n)))[:limit]


def merge_plans(plans: Sequence[Sequence[str]], limit: int) -> list[str]:
    """Names of several plans taken in turn (first of each, then second of each, ...), each once
    (case-insensitive), at most ``limit``."""
    out: list[str] = []
    seen: set[str] = set()
    for j in range(max((len(p) for p in plans), default=0)):
        for p in plans:
            if j < len(p) and p[j].lower() not in seen:
                seen.add(p[j].lower())
                out.append(p[j])
    return out[:limit]


def indexed_examples(examples: Sequence[PlanExample], titles: Container[str]) -> list[PlanExample]:
    """The examples with only the articles whose :func:`title_key` is in ``titles`` (the index's),
    in order; an example left with none is dropped."""
    out = []
    for ex in examples:
        kept = tuple(a for a in ex.articles if title_key(a) in titles)
        if kept:
            out.append(PlanExample(ex.question, kept))
    return out


class Planner:
    """Writes plans for a batch of questions with a generator, from the examples nearest each
    question: ``shots`` examples per plan, ``samples`` plans per question (plan ``s`` uses the
    nearest examples ``s*shots .. (s+1)*shots - 1``), at most ``entries`` names in all; greedy,
    with no ``no_repeat``-token n-gram twice in a plan (0: off), so a plan that loops on one name
    moves on to others."""

    def __init__(self, examples: Sequence[PlanExample], embed: Any = None, shots: int = 4, samples: int = 2,
                 entries: int = 16, max_new_tokens: int = 128, no_repeat: int = 0):
        self.examples = list(examples)
        self.shots, self.samples, self.entries, self.max_new_tokens = shots, samples, entries, max_new_tokens
        self.no_repeat = no_repeat
        self.embed = embed
        self._vectors = None if embed is None else _unit(np.asarray(embed([e.question for e in self.examples])))

    def nearest(self, questions: Sequence[str]) -> np.ndarray:
        """Row ``i``: example indices by similarity to question ``i``, nearest first (the
        retriever's query embedding; without one, shared lower-cased words)."""
        if self._vectors is not None:
            sims = _unit(np.asarray(self.embed(list(questions)))) @ self._vectors.T
        else:
            words = [set(re.findall(r"\w+", e.question.lower())) for e in self.examples]
            sims = np.array([[len(set(re.findall(r"\w+", q.lower())) & w) / (1 + len(w)) for w in words]
                             for q in questions], dtype=np.float32)
        return np.argsort(-sims, axis=1, kind="stable")

    def prompts(self, questions: Sequence[str]) -> list[list[str]]:
        """Per question, its ``samples`` plan prompts (an example whose question is the very
        question asked is skipped, so the examples' own questions can be evaluated fairly)."""
        order = self.nearest(questions)
        out = []
        for i, q in enumerate(questions):
            near = [j for j in order[i] if self.examples[j].question != q]
            per = []
            for s in range(self.samples):
                idx = near[s * self.shots:(s + 1) * self.shots]
                if len(idx):
                    per.append(plan_prompt(q, [self.examples[j] for j in idx[::-1]]))
            out.append(per)
        return out

    def plan(self, generator: Any, questions: Sequence[str]) -> list[tuple[list[str], list[str], int, int]]:
        """Per question ``(names, replies, prompt tokens, completion tokens)``: the merged names, the
        raw replies and the tokens of its plans; all plans of all questions in one greedy
        ``generate_batch``."""
        from unirag.sampling_params import SamplingParams

        per = self.prompts(questions)
        flat = [p for ps in per for p in ps]
        outs = generator.generate_batch(flat, SamplingParams(max_new_tokens=self.max_new_tokens, stop=["\n"],
                                                             no_repeat_ngram=self.no_repeat))
        result, at = [], 0
        for ps in per:
            mine = outs[at:at + len(ps)]
            texts = [o.text for o in mine]
            result.append((merge_plans([parse_plan(t, self.entries) for t in texts], self.entries), texts,
                           sum(len(generator.encode_prompt(p)) for p in ps), sum(len(o.token_ids) for o in mine)))
            at += len(ps)
        return result


def _unit(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def title_key(name: str) -> str:
    """How a planned name and a passage title are compared: lower-cased, outer spaces removed."""
    return name.lower().strip()


def title_lookup(store: Any) -> dict[str, str]:
    """:func:`title_key` of a passage title -> the id of the first passage with that title."""
    out: dict[str, str] = {}
    for p in store:
        out.setdefault(title_key(p.title), p.id)
    return out
