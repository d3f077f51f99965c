"""Where unirag keeps converted models and built indexes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder: ``$UNIRAG_CACHE`` or ``~/.cache/unirag``.

    Pure: nothing is created here; code that writes under it creates its own folders
    (e.g. :func:`unirag.config.fs.atomic_dir` creates the parents of its target).
    """
    root = os.environ.get("UNIRAG_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "unirag"
