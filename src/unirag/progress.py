"""Progress of long first-run steps (embedding a corpus): what is being built, items done / total,
items per second and the time left.

The time left follows the work, not the item count, where the worker says what its items cost
(:meth:`Progress.expect`, ``update(n, work=...)``: an encoder that embeds the longest passages first
reports tokens, so the early, slow items do not inflate the estimate), at the rate of the last
``window_s`` seconds (a thread freed half-way through shows up in the estimate within that window).

A rich progress bar on a terminal, plain lines elsewhere (logs, CI, pipes), nothing when disabled;
a callback ``on_progress(done, total)`` sees every update either way. Imports nothing of unirag's,
so any layer may use it; objects with ``update(n)`` / ``close()`` (this one, a tqdm bar) are what
:meth:`unirag.models.Encoder.encode` advances.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

ProgressCallback = Callable[[int, int], None]


def format_seconds(s: float) -> str:
    """``75`` → ``1m15s``; ``9.4`` → ``9s``."""
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """Done / total of one step, shown as it advances.

    ``display``: ``"auto"`` (rich bar when ``stream`` is a terminal, else plain lines), ``"rich"``,
    ``"plain"`` or ``"none"``. Plain lines are written at most every ``every_s`` seconds (and at the
    end): ``embedding corpus: 2,048/10,033 passages (20%), 41.3 passages/s, 3m13s left``.
    """

    def __init__(self, total: int, desc: str, unit: str = "passages", display: str = "auto",
                 on_progress: ProgressCallback | None = None, stream: IO[str] | None = None,
                 every_s: float = 10.0, clock: Callable[[], float] = time.monotonic, window_s: float = 30.0):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = 0
        self.work_done = 0.0  # work reported with update(..., work=)
        self.work_expected = 0.0  # work announced by expect(), for items_expected items
        self.items_expected = 0
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()  # (time, work or items done) over the window
        self.on_progress = on_progress
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.clock = clock
        self.start = clock()
        self._last_line = self.start
        self._samples.append((self.start, 0.0))
        self._closed = False
        self._rich: Any = None
        if display == "auto":
            display = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.display = display
        if display == "rich":
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn)

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn(f"{unit}"), TextColumn("{task.fields[rate]}"),
                                      TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                                      console=Console(file=self.stream), transient=False)
            self._task = self._rich.add_task(desc, total=self.total, rate="", left="")
            self._rich.start()

    @property
    def rate(self) -> float:
        """Items per second so far."""
        dt = self.clock() - self.start
        return self.done / dt if dt > 0 else 0.0

    def expect(self, items: int, work: float) -> None:
        """The next ``items`` items cost ``work`` in all (tokens, say); items not announced yet are
        taken to cost the average of those that were."""
        self.items_expected += int(items)
        self.work_expected += float(work)

    def _by_work(self) -> bool:
        return self.items_expected > 0 and self.work_done > 0

    def eta_s(self) -> float | None:
        """Seconds left: the work left (announced, plus the average cost of items not announced yet)
        at the rate of the last ``window_s`` seconds; by item count where no work is reported.
        ``None`` before the first item."""
        if self.done <= 0:
            return None
        (t0, w0), (t1, w1) = self._samples[0], self._samples[-1]
        if t1 - t0 < min(5.0, self.window_s) or w1 <= w0:  # too short a window: the whole run so far
            t0, w0 = self.start, 0.0
        rate = (w1 - w0) / (t1 - t0) if t1 > t0 else 0.0
        if rate <= 0:
            return None
        if self._by_work():
            unannounced = max(0, self.total - self.items_expected)
            left = max(0.0, self.work_expected - self.work_done) + unannounced * self.work_expected / self.items_expected
        else:
            left = float(self.total - self.done)
        return left / rate

    def line(self) -> str:
        """The plain progress line of the current state."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = self.eta_s()
        left = f", {format_seconds(eta)} left" if eta is not None and self.done < self.total else ""
        took = f", took {format_seconds(self.clock() - self.start)}" if self.done >= self.total else ""
        return (f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), "
                f"{self.rate:.1f} {self.unit}/s{left}{took}")

    def update(self, n: int = 1, work: float | None = None) -> None:
        """``n`` more items are done (costing ``work``, in the unit of :meth:`expect`)."""
        self.done += int(n)
        if work is not None:
            self.work_done += float(work)
        now = self.clock()
        self._samples.append((now, self.work_done if self._by_work() else float(self.done)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)
        if self._rich is not None:
            eta = self.eta_s()
            self._rich.update(self._task, completed=self.done, rate=f"{self.rate:.1f}/s",
                              left=f"{format_seconds(eta)} left" if eta is not None and self.done < self.total else "")
        elif self.display == "plain":
            now = self.clock()
            if now - self._last_line >= self.every_s or self.done >= self.total:
                self._last_line = now
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        """Stop the display (the rich bar stays on screen at its last state)."""
        if self._closed:
            return
        self._closed = True
        if self._rich is not None:
            self._rich.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
