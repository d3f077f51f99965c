"""Shared CLI helpers: consoles, JSON output, clean one-line errors."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

out = Console()
err = Console(stderr=True)


def known_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input, reported as one line and exit code 2."""
    from unirag.config.base import ConfigError
    from unirag.corpus.passage import CorpusError
    from unirag.index.errors import IndexFormatError, IndexMismatchError
    from unirag.models.registry import ModelNotFoundError

    return (ConfigError, CorpusError, IndexFormatError, IndexMismatchError, ModelNotFoundError,
            FileNotFoundError, KeyError)


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout (no rich markup)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
