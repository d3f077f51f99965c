"""The engine protocol: the verbs each engine (pipeline, rag, onegen) implements behind
:class:`unirag.RAG`, and the helpers they share to build :class:`~unirag.outputs.Answer` objects."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from unirag.corpus.passage import Passage
from unirag.outputs import Answer, Event, Finished, Source
from unirag.sampling_params import SamplingParams


@runtime_checkable
class Engine(Protocol):
    """What :class:`unirag.RAG` needs from an engine."""

    name: str

    def ask_batch(self, questions: Sequence[str], params: SamplingParams) -> list[Answer]:
        """One answer per question, in order (decoded together where the engine batches)."""
        ...

    def stream(self, question: str, params: SamplingParams) -> Iterator[Event]:
        """Text deltas and retrieval events as they happen, then ``Finished`` with the answer."""
        ...

    def stream_batch(self, questions: Sequence[str], params: SamplingParams | Sequence[SamplingParams],
                     cancelled: Any = None, admit: Any = None) -> Iterator[tuple[int, Event]]:
        """``(question index, event)`` pairs of several questions decoded together; ``params`` one
        for all or one per question; ``cancelled(i)`` (asked between steps) ends question ``i``;
        ``admit()`` (asked between steps, where :meth:`admits` allows) returns new
        ``(question, params)`` pairs that join the running batch, numbered on after the others."""
        ...

    def admits(self, params: SamplingParams) -> bool:
        """Whether a question with ``params`` can join a running batch (continuous batching)."""
        ...

    def search(self, queries: Sequence[str], k: int) -> Any:
        """A :class:`~unirag.retrieval.SearchResult` of the engine's own retriever."""
        ...

    def swap_index(self, folder: str) -> None:
        """Answer from another index folder from now on (same embedding function; no reload)."""
        ...

    def info(self) -> dict[str, Any]:
        """What the engine is made of: models, index folder, passage count."""
        ...


@runtime_checkable
class UpdatableEngine(Engine, Protocol):
    """An engine over an index folder that can change it live (the optional verbs; every engine
    but closed-book has them, and :class:`unirag.RAG` checks with ``isinstance``). Each verb writes
    the next version of the folder (:func:`unirag.retrieval.update.update_index`), then re-opens
    it and installs it by one assignment, so a search sees the old version or the new one, never
    part of a batch; writers are serialised by a lock."""

    def add_documents(self, passages: Iterable[Any]) -> dict[str, Any]:
        """Add passages (``Passage`` or dicts with ``id``, ``text``); an existing id is replaced.
        Returns the counts: ``added``, ``replaced``, ``deleted``, ``embedded``, ``passages``."""
        ...

    def delete_documents(self, ids: Iterable[str]) -> dict[str, Any]:
        """Remove passages by id; unknown ids raise and change nothing."""
        ...


class BatchStreaming:
    """``ask_batch`` and ``stream`` of an engine whose primitive is ``stream_batch``."""

    def stream_batch(self, questions: Sequence[str], params: SamplingParams | Sequence[SamplingParams],
                     cancelled: Any = None, admit: Any = None) -> Iterator[tuple[int, Event]]:
        raise NotImplementedError

    def admits(self, params: SamplingParams) -> bool:
        """Whether a question can join a running batch (default: no; batches run whole)."""
        return False

    def ask_batch(self, questions: Sequence[str], params: SamplingParams) -> list[Answer]:
        """The final answers of :meth:`stream_batch`, in question order."""
        done = {i: ev.answer for i, ev in self.stream_batch(questions, params) if isinstance(ev, Finished)}
        return [done[i] for i in range(len(questions))]

    def stream(self, question: str, params: SamplingParams) -> Iterator[Event]:
        """The events of one question (see :meth:`stream_batch`)."""
        for _, ev in self.stream_batch([question], params):
            yield ev


def make_sources(passages: Sequence[Passage], scores: Sequence[float], step: int | None = None,
                 start: int = 1) -> list[Source]:
    """Numbered :class:`Source` objects (``[start]``, ``[start+1]``, ...) of retrieved passages."""
    return [Source(number=start + i, id=p.id, title=p.title, text=p.text, score=float(s), step=step,
                   meta=dict(p.meta))
            for i, (p, s) in enumerate(zip(passages, scores))]


def hits(result: Any, i: int) -> tuple[list[Passage], list[float]]:
    """Query ``i``'s passages and scores of a search result (padding rows dropped)."""
    rows = [j for j, r in enumerate(result.rows[i]) if r >= 0]
    return result.passages(i), [float(result.scores[i][j]) for j in rows]


class Clock:
    """Seconds since creation: ``lap()`` returns the time since the last lap."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the previous lap (or creation)."""
        now = time.perf_counter()
        dt, self.last = now - self.last, now
        return dt

    def total(self) -> float:
        """Seconds since creation."""
        return time.perf_counter() - self.t0
