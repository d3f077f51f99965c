"""FanOutQA dev (``fanoutqa`` package) joined with the Wikipedia summaries corpus.

A *leaf* is a single-hop sub-question of the decomposition tree (no further decomposition),
with its answer and its evidence page. The join keeps leaves whose evidence page title is a
corpus passage id: 558 of the 2,142 dev leaves. The train / held-out split is by top-level
question (a seeded shuffle of question ids), so nothing of a held-out question is trained on.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from unirag.data.qa import QAItem
from unirag.data.wiki import _package_dir, wiki_summaries


@dataclass
class FanOutLeaf:
    """A single-hop sub-question with its gold evidence passage id (a corpus title)."""

    id: str
    question: str
    answer: Any
    evidence_title: str
    root_id: str
    depends_on: list[str] = field(default_factory=list)

    @property
    def answers(self) -> list[str]:
        """The answer as a list of strings (FanOutQA answers may be lists, dicts or numbers)."""
        return _answer_strings(self.answer)


@dataclass
class FanOutQuestion:
    """A top-level (multi-hop) question with its leaves in decomposition order."""

    id: str
    question: str
    answer: Any
    leaves: list[FanOutLeaf]
    categories: list[str] = field(default_factory=list)

    @property
    def answers(self) -> list[str]:
        return _answer_strings(self.answer)


def _answer_strings(answer: Any) -> list[str]:
    if isinstance(answer, dict):
        return [str(v) for v in answer.values()]
    if isinstance(answer, list):
        return [str(v) for v in answer]
    return [str(answer)]


def dev_file() -> Path:
    """Path of the packaged FanOutQA dev JSON."""
    return _package_dir("fanoutqa", "fanoutqa") / "data" / "fanout-final-dev.json"


def _leaves(node: dict, root_id: str) -> list[FanOutLeaf]:
    if node.get("decomposition"):
        out = []
        for child in node["decomposition"]:
            out.extend(_leaves(child, root_id))
        return out
    ev = node.get("evidence") or {}
    return [FanOutLeaf(node["id"], node["question"], node["answer"], ev.get("title", ""), root_id,
                       list(node.get("depends_on", [])))]


@lru_cache(maxsize=1)
def fanoutqa_dev() -> list[FanOutQuestion]:
    """All 310 dev questions with all their leaves (joined or not)."""
    data = json.loads(dev_file().read_text(encoding="utf-8"))
    out = []
    for q in data:
        leaves = []
        for child in q["decomposition"]:
            leaves.extend(_leaves(child, q["id"]))
        out.append(FanOutQuestion(q["id"], q["question"], q["answer"], leaves, q.get("categories", [])))
    return out


def fanoutqa_leaves(joined: bool = True) -> list[FanOutLeaf]:
    """Dev leaves; with ``joined`` only those whose evidence page is in the corpus (558)."""
    titles = wiki_summaries() if joined else None
    return [leaf for q in fanoutqa_dev() for leaf in q.leaves if titles is None or leaf.evidence_title in titles]


def fanoutqa_split(heldout_fraction: float = 0.3, seed: int = 0) -> tuple[list[FanOutQuestion], list[FanOutQuestion]]:
    """``(train, heldout)`` top-level questions: a seeded shuffle of the 310 question ids, the last
    ``heldout_fraction`` held out. Every leaf of a question stays on its question's side."""
    questions = sorted(fanoutqa_dev(), key=lambda q: q.id)
    random.Random(seed).shuffle(questions)
    n_held = round(len(questions) * heldout_fraction)
    return questions[: len(questions) - n_held], questions[len(questions) - n_held :]


def fanoutqa_qa(kind: str = "single", split: str = "heldout", joined: bool = True) -> list[QAItem]:
    """The one FanOutQA question loader, over :func:`fanoutqa_split`.

    ``kind``: ``single`` = leaf sub-questions (with ``joined``, only those whose evidence page is a
    corpus passage: 160 held-out, 398 train, 558 all), evidence = that page; ``multi`` = top-level
    questions (93 held-out), evidence = their leaves' pages found in the corpus (in order, no
    repeats). ``split``: ``heldout``, ``train`` or ``all``."""
    if kind not in ("single", "multi"):
        raise ValueError(f"unknown FanOutQA kind {kind!r} (single, multi)")
    if split == "all":
        questions = fanoutqa_dev()
    elif split in ("train", "heldout"):
        questions = fanoutqa_split()[0 if split == "train" else 1]
    else:
        raise ValueError(f"unknown FanOutQA split {split!r} (heldout, train, all)")
    titles = wiki_summaries()
    items: list[QAItem] = []
    for q in questions:
        if kind == "multi":
            ev = [lf.evidence_title for lf in q.leaves if lf.evidence_title in titles]
            items.append(QAItem(q.id, q.question, q.answers, list(dict.fromkeys(ev))))
        else:
            items += [QAItem(lf.id, lf.question, lf.answers, [lf.evidence_title] if lf.evidence_title in titles
                             else []) for lf in q.leaves if not joined or lf.evidence_title in titles]
    return items
