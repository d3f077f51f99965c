"""Concurrent searches answered together: one query-encoder run and one index search for all the
``/search`` requests that wait for the same engine and ``k``.

No thread of its own and no added wait: the first request of a key runs its search at once; the
requests that arrive meanwhile queue, and when it finishes one of their threads takes all of them
(up to ``max_batch``) as the next batch. At low load every search runs alone, as before; under load
the encoder and the index see batches (a batch of 8 queries costs little more than one query on
ONNX Runtime and FAISS). Requests of different engines or ``k`` never share a batch: a hybrid
retriever's fused top-``k`` depends on ``k``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any


class _Request:
    __slots__ = ("query", "result", "error", "done")

    def __init__(self, query: str):
        self.query = query
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class SearchBatcher:
    """``search(key, query, run)``: the result of ``run([..., query, ...])`` for ``query``, where
    ``run`` takes the queries of one batch (all of one ``key``) and returns one result per query.
    ``on_batch(key, size)`` is called before each batch runs (metrics)."""

    def __init__(self, max_batch: int = 32, on_batch: Callable[[Hashable, int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._cv = threading.Condition()
        self._queues: dict[Hashable, list[_Request]] = {}
        self._busy: set[Hashable] = set()

    def search(self, key: Hashable, query: str, run: Callable[[Sequence[str]], Sequence[Any]]) -> Any:
        req = _Request(query)
        with self._cv:
            self._queues.setdefault(key, []).append(req)
        while True:
            with self._cv:
                while not req.done and key in self._busy:
                    self._cv.wait()
                if req.done:
                    break
                queue = self._queues[key]
                batch, queue[:] = queue[: self.max_batch], queue[self.max_batch :]
                self._busy.add(key)
            try:
                if self.on_batch is not None:
                    self.on_batch(key, len(batch))
                results = run([r.query for r in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} searches gave {len(results)} results")
                for r, res in zip(batch, results):
                    r.result = res
            except BaseException as exc:  # every request of the batch gets the error
                for r in batch:
                    r.error = exc
            finally:
                with self._cv:
                    for r in batch:
                        r.done = True
                    self._busy.discard(key)
                    if not self._queues[key]:
                        del self._queues[key]
                    self._cv.notify_all()
        if req.error is not None:
            raise req.error
        return req.result
