"""``SamplingParams``: the one set of decoding and retrieval settings that every engine accepts.

Stands alone (no torch): a request's settings are plain data that validate themselves, round-trip
to a dict, and carry their own seed, so concurrent requests never share random state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from unirag.config.base import ConfigBase, ConfigError


@dataclass
class SamplingParams(ConfigBase):
    """How to decode, and how much to retrieve, for one request.

    Decoding (all engines): ``max_new_tokens``; ``temperature`` 0 is greedy, otherwise sampling
    with ``top_p`` / ``top_k`` (0 = off); ``seed`` makes sampling repeatable and is private to the
    request (torch's global random state is never touched); ``stop`` strings end the answer (the
    stop string itself is not returned); ``repetition_penalty`` > 1 discourages repeats;
    ``no_repeat_ngram`` > 0 forbids any n-gram of that many tokens to occur twice in the generated
    text (the prompt and inserted passages do not count, so an answer may still copy from them, and
    OneGen's query token is never banned: ``max_retrievals`` limits it; 0: off; ``None``: the
    engine's default, OneGen 3, the others off).

    Retrieval: ``k`` passages per retrieval (``None``: the engine's default: pipeline 3, RAG its
    ``n_docs``, OneGen 1). Pipeline only: ``hops`` retrievals per question (``None``: the engine's
    ``hops``, set at load; 1 = single-shot; above 1 the reader writes a follow-up query between
    retrievals, see :mod:`unirag.pipeline.iterative`). OneGen-only (ignored by the other engines): ``max_retrievals`` query
    tokens honoured per answer; ``candidates`` hits kept in the trace; ``threshold`` refuses
    passages scoring below it; ``retrieve_prob`` emits the query token whenever its probability
    reaches that value; ``max_passage_words`` / ``max_passage_tokens`` cut inserted passages;
    ``force_query_at`` generation steps at which the query token is emitted regardless;
    ``keep_vectors`` keeps each query vector in the trace.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    repetition_penalty: float = 1.0
    no_repeat_ngram: int | None = None
    k: int | None = None
    max_retrievals: int = 4
    candidates: int = 5
    threshold: float | None = None
    retrieve_prob: float | None = None
    max_passage_words: int | None = None
    max_passage_tokens: int = 256
    force_query_at: list[int] = field(default_factory=list)
    keep_vectors: bool = False
    hops: int | None = None

    def __post_init__(self) -> None:
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        self.force_query_at = list(self.force_query_at)
        self.validate()

    def validate(self) -> SamplingParams:
        """Raise :class:`~unirag.config.ConfigError` naming the first field out of range."""
        checks: list[tuple[str, bool, str]] = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            ("temperature", self.temperature >= 0, "must be >= 0"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0"),
            ("no_repeat_ngram", self.no_repeat_ngram is None or self.no_repeat_ngram >= 0, "must be >= 0 (0 = off)"),
            ("k", self.k is None or self.k >= 0, "must be >= 0"),
            ("max_retrievals", self.max_retrievals >= 0, "must be >= 0"),
            ("candidates", self.candidates >= 0, "must be >= 0"),
            ("retrieve_prob", self.retrieve_prob is None or self.retrieve_prob >= 0, "must be >= 0 (above 1: never)"),
            ("max_passage_words", self.max_passage_words is None or self.max_passage_words >= 1, "must be >= 1"),
            ("max_passage_tokens", self.max_passage_tokens >= 1, "must be >= 1"),
            ("hops", self.hops is None or self.hops >= 1, "must be >= 1 (1 = single-shot)"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"SamplingParams.{name} = {getattr(self, name)!r}: {why}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"SamplingParams.stop = {self.stop!r}: stop strings must be non-empty strings")
        return self

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (temperature 0)."""
        return self.temperature <= 0

    def with_(self, **changes: Any) -> SamplingParams:
        """A copy with ``changes`` applied (validated); unknown names raise ``ConfigError``."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"SamplingParams: unknown field(s) {unknown}; known: {sorted(known)}")
        return replace(self, **changes)

    def generator(self) -> Any:
        """A private ``torch.Generator`` seeded with ``seed`` (``None`` without a seed)."""
        if self.seed is None:
            return None
        import torch

        return torch.Generator().manual_seed(int(self.seed))
