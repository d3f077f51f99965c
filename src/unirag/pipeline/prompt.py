"""The retrieve-then-read prompt: numbered passages, then the question."""

from __future__ import annotations

from collections.abc import Sequence

from unirag.corpus.passage import Passage

SYSTEM = (
    "You answer questions using the numbered passages. Answer briefly and cite the passages "
    "you used like [1]. If the passages do not contain the answer, say you don't know."
)


def clip_words(text: str, words: int | None) -> str:
    """The first ``words`` words of ``text``, with `` ...`` when cut (``None``: unchanged)."""
    parts = text.split()
    return text if words is None or len(parts) <= words else " ".join(parts[:words]) + " ..."


def build_prompt(question: str, passages: Sequence[Passage], max_passage_words: int | None = 120) -> str:
    """The user turn: numbered passages (each cut to ``max_passage_words``), then the question."""
    blocks = [f"[{i}] {p.title}: {clip_words(p.text, max_passage_words)}" for i, p in enumerate(passages, 1)]
    return "Passages:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer:"
