"""The retrieve-then-read prompt, fitted to each model family.

A :class:`PromptStyle` holds a family's system prompt, its user-turn template (numbered passages
``[n] Title: text``, then the question) and its answer post-processing (the short answer, the
abstention test). :data:`STYLES` is keyed by the generator's ``config.model_type`` (``llama``:
SmolLM2; ``qwen2``: Qwen2.5); :func:`style_for` picks one for a generator, ``default`` for
any other family. Each style was chosen by measurement on held-out FanOutQA questions
(``bench/bench_reader.py``), not shared blindly: a prompt that suits one model can make another
copy its first passage instead of answering.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unirag.corpus.passage import Passage
from unirag.outputs import ABSTAIN, cited_numbers, extract_answer, is_abstention  # noqa: F401 (re-exported)

SYSTEM = (
    "You answer questions using the numbered passages. Answer briefly and cite the passages "
    "you used like [1]. If the passages do not contain the answer, say you don't know."
)


def clip_words(text: str, words: int | None) -> str:
    """The first ``words`` words of ``text``, with `` ...`` when cut (``None``: unchanged)."""
    parts = text.split()
    return text if words is None or len(parts) <= words else " ".join(parts[:words]) + " ..."


def number_passages(passages: Sequence[Passage], max_passage_words: int | None = 120) -> str:
    """``[1] Title: text`` blocks, one per passage, each cut to ``max_passage_words``."""
    return "\n\n".join(f"[{i}] {p.title}: {clip_words(p.text, max_passage_words)}" for i, p in enumerate(passages, 1))


def build_prompt(question: str, passages: Sequence[Passage], max_passage_words: int | None = 120) -> str:
    """The default user turn: numbered passages (each cut to ``max_passage_words``), then the question."""
    return "Passages:\n" + number_passages(passages, max_passage_words) + f"\n\nQuestion: {question}\nAnswer:"


@dataclass(frozen=True)
class PromptStyle:
    """One model family's prompt and answer post-processing.

    ``system``: the system turn (``""``: none). ``template``: the user turn, with ``{passages}``
    (numbered blocks) and ``{question}``. ``first_line``: the short answer is the first line of
    the generation (families that answer first and may ramble after), else
    :func:`~unirag.outputs.extract_answer`'s rule. ``attribute``: the family answers well but cites
    badly when asked to (it writes the marker instead of the answer), so the prompt asks for the
    answer alone and the engine cites by attribution: the passages whose text contains the short
    answer (:meth:`attribution`) are appended as markers ``[n]``."""

    name: str
    system: str
    template: str
    first_line: bool = False
    attribute: bool = False

    def user_turn(self, question: str, passages: Sequence[Passage], max_passage_words: int | None = 120) -> str:
        """The user turn for ``question`` over ``passages``."""
        return self.template.format(passages=number_passages(passages, max_passage_words), question=question)

    def short_answer(self, text: str) -> str:
        """The short answer that exact match and F1 score."""
        if self.first_line:
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            text = lines[0] if lines else ""
        return extract_answer(text)

    def attribution(self, short: str, passages: Sequence[Passage]) -> list[int]:
        """Numbers (1-based) of the passages whose title or text contains ``short`` (case, punctuation
        and spacing ignored); empty for an empty answer."""
        want = _norm(short)
        if not want:
            return []
        return [i for i, p in enumerate(passages, 1) if want in _norm(f"{p.title} {p.text}")]

    def abstained(self, text: str) -> bool:
        """Whether the generation says the passages do not hold the answer."""
        return is_abstention(text)


def _norm(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces (for containment tests)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


_DEFAULT = PromptStyle("default", SYSTEM, "Passages:\n{passages}\n\nQuestion: {question}\nAnswer:")

STYLES: dict[str, PromptStyle] = {
    "default": _DEFAULT,
    # SmolLM2-135M-Instruct
    "llama": _DEFAULT,
    # Qwen2.5(-Coder)-Instruct (the packaged q4_k_m build): asked to cite, it often writes the marker
    # alone ("[1]") or copies a worked example's answer; asked plainly it answers (probe rounds 1-6,
    # bench/results/prompt-probe-qwen2.5-*: EM 18.8 on 48 held-out questions against 14.6 with the
    # cite-in-the-answer prompt), and the engine cites the passages that contain the answer.
    "qwen2": PromptStyle(
        "qwen2", "",
        "{passages}\n\nQuestion: {question}\nAnswer with a short phrase. If the passages do not contain the "
        f"answer, answer: {ABSTAIN}",
        first_line=True, attribute=True,
    ),
}


def model_type(generator: Any) -> str:
    """The generator's ``config.model_type`` (``""`` when it has none)."""
    model = getattr(generator, "model", None)
    return str(getattr(getattr(model, "config", None), "model_type", "") or "")


def style_for(generator: Any, name: str | None = None) -> PromptStyle:
    """The prompt style ``name`` (a key of :data:`STYLES`), else the generator family's, else ``default``."""
    if name:
        if name not in STYLES:
            from unirag.config.base import ConfigError

            raise ConfigError(f"unknown prompt style {name!r} (known: {', '.join(STYLES)})")
        return STYLES[name]
    return STYLES.get(model_type(generator), _DEFAULT)
