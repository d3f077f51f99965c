"""Quiet model loading: transformers' advisory logs and progress bars are silenced only while our
own load calls run, and the caller's settings are restored afterwards."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_depth = 0
_saved: dict[str, Any] = {}


def _enter() -> None:
    global _depth
    from transformers.utils import logging

    with _lock:
        _depth += 1
        if _depth > 1:
            return
        catcher = warnings.catch_warnings()
        catcher.__enter__()
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        _saved.update(verbosity=logging.get_verbosity(), bars=logging.is_progress_bar_enabled(), warnings=catcher)
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def _exit() -> None:
    global _depth
    from transformers.utils import logging

    with _lock:
        _depth -= 1
        if _depth > 0:
            return
        logging.set_verbosity(_saved["verbosity"])
        if _saved["bars"]:
            logging.enable_progress_bar()
        else:
            logging.disable_progress_bar()
        _saved.pop("warnings").__exit__(None, None, None)
        _saved.clear()


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Within the block transformers logs errors only and shows no progress bars; on exit its
    verbosity, progress-bar setting and the warning filters are what they were before (nesting
    is fine: the outermost block restores)."""
    _enter()
    try:
        yield
    finally:
        _exit()
