"""The classic retrieve-then-read pipeline that the RAG and OneGen engines are compared against."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from unirag.config.base import ConfigBase
from unirag.corpus.passage import Passage
from unirag.models.generator import GenerationParams

SYSTEM = (
    "You answer questions using the numbered passages. Answer briefly and cite the passages "
    "you used like [1]. If the passages do not contain the answer, say you don't know."
)


@dataclass
class PipelineConfig(ConfigBase):
    """Settings of :class:`Pipeline`: how many passages, how long each may be, how to decode."""

    k: int = 3
    max_passage_words: int = 120
    max_new_tokens: int = 96
    temperature: float = 0.0
    system_prompt: str = SYSTEM


@dataclass
class Answer:
    """An answer with the passages it was generated from (``sources[i]`` is ``[i+1]`` in the prompt)."""

    question: str
    text: str
    sources: list[Passage] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "question": self.question,
            "answer": self.text,
            "sources": [
                {"rank": i + 1, "id": p.id, "title": p.title, "score": float(s), "text": p.text}
                for i, (p, s) in enumerate(zip(self.sources, self.scores))
            ],
        }


def _clip(text: str, words: int) -> str:
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words]) + " ..."


def build_prompt(question: str, passages: list[Passage], max_passage_words: int = 120) -> str:
    """The user turn: numbered passages, then the question."""
    blocks = [f"[{i}] {p.title}: {_clip(p.text, max_passage_words)}" for i, p in enumerate(passages, 1)]
    return "Passages:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer:"


class Pipeline:
    """``retriever`` finds top-k passages, ``generator`` reads them and answers."""

    def __init__(self, retriever, generator, config: PipelineConfig | None = None):
        self.retriever = retriever
        self.generator = generator
        self.config = config or PipelineConfig()

    def _prepare(self, question: str) -> tuple[str, list[Passage], list[float]]:
        res = self.retriever.search([question], self.config.k)
        passages = res.passages(0)
        scores = [float(s) for s, r in zip(res.scores[0], res.rows[0]) if r >= 0]
        user = build_prompt(question, passages, self.config.max_passage_words)
        return self.generator.chat_prompt(user, system=self.config.system_prompt), passages, scores

    def _params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature)

    def ask(self, question: str) -> Answer:
        """Retrieve, generate, return the answer with its sources."""
        prompt, passages, scores = self._prepare(question)
        return Answer(question, self.generator.generate(prompt, self._params()), passages, scores)

    def stream(self, question: str) -> tuple[list[Passage], list[float], Iterator[str]]:
        """``(sources, scores, pieces)``: retrieval is done up front, the answer streams."""
        prompt, passages, scores = self._prepare(question)
        return passages, scores, self.generator.stream(prompt, self._params())

    def closed_book(self, question: str) -> str:
        """The generator's answer without any passage (the no-retrieval baseline)."""
        prompt = self.generator.chat_prompt(f"Question: {question}\nAnswer briefly.\nAnswer:")
        return self.generator.generate(prompt, self._params())
