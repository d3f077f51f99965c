"""What every engine returns: one :class:`Answer` type and the events of a stream.

Stands alone (no torch). ``Answer.to_dict()`` is the documented, stable JSON schema
(``schema`` = :data:`SCHEMA`) that the CLI's ``--json``, the evaluation harness and the server
emit; new fields may be added, existing ones keep their names and meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "unirag-answer/1"
_ANSWER_CUE = re.compile(r"(?:final answer|answer)\s*[:：]\s*", re.IGNORECASE)


#: The phrase a reader is asked to reply with when its passages do not hold the answer.
ABSTAIN = "I don't know."
_ABSTAIN_RE = re.compile(
    r"\bI (?:do not|don['’]t|cannot|can['’]t) (?:know|tell|say|find|answer|determine)\b"
    r"|\b(?:is|are)(?: not| n['’]t) (?:mentioned|given|stated|provided|found|specified|contained|included) "
    r"in (?:the|these|any of the) (?:given |provided |numbered )?passages?"
    r"|\bnot in the (?:given |provided |numbered )?passages\b"
    r"|\b(?:the |these )?(?:given |provided |numbered )?passages? (?:do|does) not (?:contain|mention|say|provide|state|include|answer)"
    r"|\bno (?:information|mention) (?:about|of|on) ",
    re.IGNORECASE,
)
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def is_abstention(text: str) -> bool:
    """Whether a generation says its passages do not hold the answer (\"I don't know\", \"not in
    the passages\", \"the passages do not mention ...\"), judged on its first sentence, where a
    reader states its answer."""
    first = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0] if text.strip() else ""
    return bool(_ABSTAIN_RE.search(first))


def cited_numbers(text: str, n_sources: int) -> list[int]:
    """Passage numbers cited in ``text`` by ``[n]`` / ``[n, m]`` markers, in order of first
    citation, only those of an existing source (1..``n_sources``)."""
    out: list[int] = []
    for m in _CITE.finditer(text):
        for num in m.group(1).split(","):
            n = int(num)
            if 1 <= n <= n_sources and n not in out:
                out.append(n)
    return out


def extract_answer(text: str) -> str:
    """The short answer in a generation: after the last ``Answer:`` cue if any, else its last
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


@dataclass
class Span:
    """A stretch of the answer that a source supports: characters ``[start, end)`` of
    ``Answer.text`` (``-1`` when not located), its ``text`` and the support ``prob``
    (RAG-Token: the posterior p(z | x, y_i, y<i) of the passage over those tokens)."""

    text: str
    start: int
    end: int
    prob: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"text": self.text, "start": self.start, "end": self.end, "prob": round(float(self.prob), 6)}


@dataclass
class Source:
    """A passage the answer was generated from; ``number`` is its marker (``[number]``) in the
    prompt or in the order of retrieval. ``score`` is the retriever's score. ``step`` is the
    generation step (index among the generated tokens) at which it was retrieved, for engines
    that retrieve while generating; ``spans`` the parts of the answer it supports, where the
    engine knows them; ``prob`` an engine's posterior weight of the passage (RAG)."""

    number: int
    id: str
    title: str
    text: str
    score: float
    step: int | None = None
    prob: float | None = None
    spans: list[Span] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"number": self.number, "id": self.id, "title": self.title, "text": self.text,
                "score": round(float(self.score), 6), "step": self.step,
                "prob": None if self.prob is None else round(float(self.prob), 6),
                "spans": [s.to_dict() for s in self.spans], "meta": self.meta}


@dataclass
class TraceStep:
    """One retrieval: the ``query`` text (``""`` when the query is a hidden state), the generation
    ``step`` it happened at (``None``: before generation), the candidate ``ids`` / ``scores`` best
    first, and the ``used`` ids (those given to the generator)."""

    query: str
    step: int | None
    ids: list[str]
    scores: list[float]
    used: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"query": self.query, "step": self.step, "ids": self.ids,
                "scores": [round(float(s), 6) for s in self.scores], "used": self.used}


@dataclass
class Usage:
    """Token counts of one answer (prompt: everything the generator read, passages included)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        """JSON-ready view (OpenAI's field names)."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass
class Timings:
    """Wall-clock seconds: retrieval, generation (passage prefill included for OneGen), total;
    ``first_token`` from the start of the request to the first generated text."""

    retrieval: float = 0.0
    generation: float = 0.0
    total: float = 0.0
    first_token: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready view (seconds)."""
        return {k: None if v is None else round(float(v), 6) for k, v in self.__dict__.items()}


@dataclass
class Answer:
    """An engine's answer to one question: ``text``, its ``sources``, the retrieval ``trace``,
    ``usage``, ``timings``, the ``engine`` that wrote it and why generation stopped; ``short``
    is the short answer extracted from the text (:func:`extract_answer`; OneGen: from the text
    after its last retrieval), the string that exact match and F1 score. ``cited``: the numbers
    of the sources the text cites with ``[n]`` markers (only numbers of existing sources, in
    order of first citation; empty when it abstains); ``abstained``: the text says the passages
    do not hold the answer (:func:`is_abstention`)."""

    question: str
    text: str
    sources: list[Source] = field(default_factory=list)
    trace: list[TraceStep] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    engine: str = ""
    finish_reason: str = "stop"
    short: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cited: list[int] = field(default_factory=list)
    abstained: bool = False

    def ground(self) -> Answer:
        """Set ``cited`` and ``abstained`` from ``text`` and ``sources``; returns ``self``."""
        self.abstained = is_abstention(self.text)
        self.cited = [] if self.abstained else cited_numbers(self.text, len(self.sources))
        return self

    @property
    def source_ids(self) -> list[str]:
        """Ids of the sources, in order."""
        return [s.id for s in self.sources]

    @property
    def retrieved_ids(self) -> list[str]:
        """Every passage id the generator was given, in order, without repeats."""
        return list(dict.fromkeys(pid for t in self.trace for pid in t.used))

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON schema: ``schema``, ``question``, ``answer``, ``short_answer``, ``engine``,
        ``finish_reason``, ``sources``, ``trace``, ``usage``, ``timings``, ``extra``, ``cited``,
        ``abstained``."""
        return {"schema": SCHEMA, "question": self.question, "answer": self.text, "short_answer": self.short,
                "engine": self.engine,
                "finish_reason": self.finish_reason, "sources": [s.to_dict() for s in self.sources],
                "trace": [t.to_dict() for t in self.trace], "usage": self.usage.to_dict(),
                "timings": self.timings.to_dict(), "extra": self.extra,
                "cited": list(self.cited), "abstained": bool(self.abstained)}


@dataclass
class TextDelta:
    """New answer text."""

    text: str
    type: str = "text"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"type": self.type, "text": self.text}


@dataclass
class RetrievalEvent:
    """A retrieval happened: its trace step and the passages given to the generator (as
    :class:`Source`, numbered in the order the answer will list them)."""

    step: TraceStep
    sources: list[Source]
    type: str = "retrieval"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"type": self.type, "step": self.step.to_dict(), "sources": [s.to_dict() for s in self.sources]}


@dataclass
class Finished:
    """The stream is over: the complete :class:`Answer` (usage and timings included)."""

    answer: Answer
    type: str = "done"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"type": self.type, "answer": self.answer.to_dict()}


Event = TextDelta | RetrievalEvent | Finished
