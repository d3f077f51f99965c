"""One worker thread per generating engine: a bounded queue of requests, decoded in batches.

The worker takes up to ``max_batch`` waiting requests (waiting up to ``batch_wait_ms`` for the
batch to fill), runs :meth:`unirag.RAG.stream_batch` over them with each request's own
:class:`~unirag.SamplingParams`, and hands each event to its request's asyncio queue on the
server's event loop. A request marked cancelled (client gone, timeout) ends at the next decoding
step; the others in its batch go on.
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
                 metrics: Any = None):
        self.name = name
        self.rag = rag
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000.0
        self.metrics = metrics
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
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
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue a job; :class:`QueueFull` when ``max_queue`` are already waiting."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"engine {self.name!r} has {self._queue.maxsize} requests waiting") from None

    # --- the worker thread ----------------------------------------------------------------
    def _next_batch(self) -> list[Job] | None:
        first = self._queue.get()
        if first is self._stop:
            return None
        batch = [first]
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

    def _run(self, jobs: list[Job]) -> None:
        def cancelled(i: int) -> bool:
            # asked after every decoding step of a live row: count the step's token now, so that
            # the token counter rises while a request decodes (and stops when it is cancelled)
            job = jobs[i]
            job.tokens_counted += 1
            if self.metrics is not None:
                self.metrics.tokens(self.name, 1)
            return job.cancelled

        for i, ev in self.rag.stream_batch([j.question for j in jobs], [j.params for j in jobs], cancelled):
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
