"""Question-answering sets: one item type, a user's JSONL, and the packaged FanOutQA by name."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unirag.corpus.jsonl import iter_jsonl
from unirag.corpus.passage import CorpusError

#: Built-in sets by name: FanOutQA held-out single-hop (160) and multi-hop (93) questions.
BUILTIN = {"fanoutqa-single": ("single", "heldout"), "fanoutqa-multi": ("multi", "heldout"),
           "fanoutqa-single-train": ("single", "train"), "fanoutqa-multi-train": ("multi", "train"),
           "fanoutqa-single-all": ("single", "all")}

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD v1.1)."""
    text = "".join(ch for ch in str(text).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_in_text(text: str, golds: str | Sequence[str]) -> bool:
    """Whether any normalised gold answer occurs in the normalised ``text`` (as EM normalises)."""
    t = normalize_answer(text)
    return any(g and g in t for g in map(normalize_answer, [golds] if isinstance(golds, str) else golds))


@dataclass
class QAItem:
    """A question with its gold answers and the ids of its evidence passages (may be empty)."""

    id: str
    question: str
    answers: list[str]
    evidence: list[str] = field(default_factory=list)


def read_qa_jsonl(path: str | os.PathLike) -> list[QAItem]:
    """A JSONL file of ``question``, ``answers`` (a list, or ``answer``: one string) and optional
    ``evidence`` (passage ids) and ``id``; errors name the file, line and field."""
    items = []
    for lineno, row in iter_jsonl(path):
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise CorpusError(f"{path}:{lineno}: field 'question' must be a non-empty string")
        ans = row.get("answers", row.get("answer"))
        if isinstance(ans, str):
            ans = [ans]
        if not isinstance(ans, list) or not ans or not all(isinstance(a, (str, int, float)) for a in ans):
            raise CorpusError(f"{path}:{lineno}: field 'answers' must be a non-empty list of strings")
        ev = row.get("evidence", [])
        if isinstance(ev, str):
            ev = [ev]
        if not isinstance(ev, list):
            raise CorpusError(f"{path}:{lineno}: field 'evidence' must be a list of passage ids")
        items.append(QAItem(str(row.get("id", lineno)), q, [str(a) for a in ans], [str(e) for e in ev]))
    if not items:
        raise CorpusError(f"{path}: no questions")
    return items


def load_qa_set(name: str) -> list[QAItem]:
    """A built-in set by name (:data:`BUILTIN`) or a JSONL file path (see :func:`read_qa_jsonl`)."""
    if name in BUILTIN:
        from unirag.data.fanoutqa import fanoutqa_qa

        return fanoutqa_qa(*BUILTIN[name])
    if not Path(name).is_file():
        raise CorpusError(f"{name}: no such QA file (or built-in set: {', '.join(BUILTIN)})")
    return read_qa_jsonl(name)
