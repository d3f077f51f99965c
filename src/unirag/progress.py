"""Progress of long first-run steps (embedding a corpus): what is being built, items done / total,
items per second and the time left.

A rich progress bar on a terminal, plain lines elsewhere (logs, CI, pipes), nothing when disabled;
a callback ``on_progress(done, total)`` sees every update either way. Imports nothing of unirag's,
so any layer may use it; objects with ``update(n)`` / ``close()`` (this one, a tqdm bar) are what
:meth:`unirag.models.Encoder.encode` advances.
"""

from __future__ import annotations

import sys
import time
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
                 every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = 0
        self.on_progress = on_progress
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.clock = clock
        self.start = clock()
        self._last_line = self.start
        self._closed = False
        self._rich: Any = None
        if display == "auto":
            display = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.display = display
        if display == "rich":
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn(f"{unit}"), TextColumn("{task.fields[rate]}"),
                                      TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                      console=Console(file=self.stream), transient=False)
            self._task = self._rich.add_task(desc, total=self.total, rate="")
            self._rich.start()

    @property
    def rate(self) -> float:
        """Items per second so far."""
        dt = self.clock() - self.start
        return self.done / dt if dt > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (``None`` before the first item)."""
        r = self.rate
        return (self.total - self.done) / r if r > 0 else None

    def line(self) -> str:
        """The plain progress line of the current state."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = self.eta_s()
        left = f", {format_seconds(eta)} left" if eta is not None and self.done < self.total else ""
        took = f", took {format_seconds(self.clock() - self.start)}" if self.done >= self.total else ""
        return (f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), "
                f"{self.rate:.1f} {self.unit}/s{left}{took}")

    def update(self, n: int = 1) -> None:
        """``n`` more items are done."""
        self.done += int(n)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done, rate=f"{self.rate:.1f}/s")
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
