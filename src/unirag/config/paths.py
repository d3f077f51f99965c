"""Where unirag keeps converted models and built indexes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder: ``$UNIRAG_CACHE`` or ``~/.cache/unirag``."""
    root = os.environ.get("UNIRAG_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "unirag"
    path.mkdir(parents=True, exist_ok=True)
    return path
