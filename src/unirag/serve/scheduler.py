"""One worker thread per generating engine: a bounded queue of requests, decoded in batches.

The worker takes up to ``max_batch`` waiting requests (waiting up to ``batch_wait_ms`` for the
batch to fill), runs :meth:`unirag.RAG.stream_batch` over them with each request's own
:class:`~unirag.SamplingParams`, and hands each event to its request's asyncio queue on the
server's event loop. While the batch decodes, requests that arrive join it between decoding steps
(continuous batching) as long as fewer than ``max_batch`` are running and the engine admits them
(:meth:`unirag.RAG.admits`: the KV-cache engines, single-shot); the others wait for the next
batch, in arrival order. A request marked cancelled (client gone, timeout) ends at the next
decoding step; the others in its batch go on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from unirag.outputs import Finished
from unirag.sampling_params import SamplingParams

log = logging.getLogger("unirag.serve")


class QueueFull(Exception):
    """The engine's queue is full: the caller answers 429."""


@dataclass
class Failed:
    """The batch a request was in failed; ``message`` is safe to show."""

    message: str


@dataclass
class Job:
    """One request: its question and params, where its events go, and whether to stop it."""

    question: str
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    finished: bool = False
    submitted: float = field(default_factory=time.monotonic)
    tokens_counted: int = 0
    checked: float = field(default_factory=time.monotonic)  # when the client was last seen connected

    def cancel(self) -> None:
        """Stop generating for this request at the next decoding step (or skip it if still queued)."""
        self.cancelled = True

    def emit(self, event: Any) -> None:
        """Hand an event to the request's coroutine (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancelled = True


class Scheduler:
    """The worker of one engine: ``submit`` jobs from the event loop, events come back to them."""

    def __init__(self, name: str, rag: Any, max_batch: int, max_queue: int, batch_wait_ms: float,
                 metrics: Any = None, continuous: bool = True):
        self.name = name
        self.rag = rag
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000.0
        self.metrics = metrics
        self.continuous = continuous
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._held: list[Job] = []  # taken from the queue but not admissible now: first in the next batch
        self._stop = object()
        self.running = 0
        self._thread = threading.Thread(target=self._work, name=f"unirag-{name}", daemon=True)

    def start(self) -> Scheduler:
        """Start the worker thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel waiting and running jobs and end the worker."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, Job):
                job.cancel()
                job.emit(Failed("the server is shutting down"))
        try:
            self._queue.put(self._stop, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def depth(self) -> int:
        """Requests waiting (not yet decoding)."""
        return self._queue.qsize() + len(self._held)

    def submit(self, job: Job) -> None:
        """Queue a job; :class:`QueueFull` when ``max_queue`` are already waiting."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"engine {self.name!r} has {self._queue.maxsize} requests waiting") from None

    # --- the worker thread ----------------------------------------------------------------
    def _next_batch(self) -> list[Job] | None:
        first = self._held.pop(0) if self._held else self._queue.get()
        if first is self._stop:
            return None
        batch = [first]
        while self._held and len(batch) < self.max_batch:
            if self._held[0] is self._stop:
                return batch  # the stop is seen after this batch
            batch.append(self._held.pop(0))
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get_nowait() if self.batch_wait <= 0 else \
                    self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is self._stop:
                self._queue.put(job)  # seen again after this batch
                break
            batch.append(job)
        return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            live = [j for j in batch if not j.cancelled]
            for j in batch:
                if j.cancelled:
                    j.finished = True
                    j.emit(Failed("cancelled before it started"))
            if not live:
                continue
            self.running = len(live)
            if self.metrics is not None:
                self.metrics.batch(self.name, len(live))
            try:
                self._run(live)
            except Exception as exc:  # one bad batch must not end the worker
                log.exception("engine %s: batch of %d failed", self.name, len(live))
                for j in live:
                    if not j.finished:
                        j.finished = True
                        j.emit(Failed(f"generation failed: {type(exc).__name__}"))
            finally:
                self.running = 0

    def _admit(self, jobs: list[Job]) -> list[tuple[str, SamplingParams]]:
        """Waiting jobs that join the running batch now (up to ``max_batch`` running); a job the
        engine cannot admit is held for the next batch, and so is everything behind it."""
        new: list[Job] = []
        while not self._held and sum(not j.finished for j in jobs) + len(new) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is self._stop:
                self._held.append(job)  # seen by _next_batch after this batch
                break
            if job.cancelled:
                job.finished = True
                job.emit(Failed("cancelled before it started"))
                continue
            if not self.rag.admits(job.params):
                self._held.append(job)
                break
            new.append(job)
        if new:
            jobs.extend(new)
            running = sum(not j.finished for j in jobs)
            self.running = running
            if self.metrics is not None:
                self.metrics.batch(self.name, running)
        return [(j.question, j.params) for j in new]

    def _run(self, jobs: list[Job]) -> None:
        """Decode ``jobs`` together; jobs admitted on the way are appended to ``jobs``."""

        def cancelled(i: int) -> bool:
            # asked after every decoding step of a live row: count the step's token now, so that
            # the token counter rises while a request decodes (and stops when it is cancelled)
            job = jobs[i]
            job.tokens_counted += 1
            if self.metrics is not None:
                self.metrics.tokens(self.name, 1)
            return job.cancelled

        admit = (lambda: self._admit(jobs)) if self.continuous else None
        for i, ev in self.rag.stream_batch([j.question for j in jobs], [j.params for j in jobs], cancelled, admit):
            job = jobs[i]
            if isinstance(ev, Finished):
                job.finished = True
                if self.metrics is not None:  # the exact count (engines that do not ask every step)
                    self.metrics.tokens(self.name, max(0, ev.answer.usage.completion_tokens - job.tokens_counted))
            job.emit(ev)
        for j in jobs:
            if not j.finished:
                j.finished = True
                j.emit(Failed("the engine ended without an answer"))
