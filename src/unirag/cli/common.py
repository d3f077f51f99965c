"""Shared CLI helpers: consoles, JSON output, clean one-line errors, the ``--debug`` switch, options
used by several commands."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

_STATE = {"debug": False}


def set_debug(on: bool) -> None:
    """Turn full tracebacks on or off for this process (the global ``--debug`` flag)."""
    _STATE["debug"] = bool(on)


def debug_enabled() -> bool:
    """Whether ``--debug`` was given or ``UNIRAG_DEBUG`` is set to a true value."""
    env = os.environ.get("UNIRAG_DEBUG", "").strip().lower()
    return _STATE["debug"] or env in ("1", "true", "yes", "on")


def click_exceptions() -> list[Any]:
    """The ``click.exceptions`` modules in use: click's own and typer's vendored copy (typer >= 0.20)."""
    import click.exceptions

    mods: list[Any] = [click.exceptions]
    try:
        from typer._click import exceptions as vendored
    except ImportError:  # older typer uses click itself
        return mods
    return mods if vendored is click.exceptions else [*mods, vendored]


def known_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's input, reported as one line and exit code 2."""
    from unirag.config.base import ConfigError
    from unirag.corpus.passage import CorpusError
    from unirag.index.errors import IndexFormatError, IndexMismatchError
    from unirag.models.registry import ModelNotFoundError

    return (ConfigError, CorpusError, IndexFormatError, IndexMismatchError, ModelNotFoundError,
            *(m.UsageError for m in click_exceptions()))


def usage_error(option: str, message: str) -> Exception:
    """A user error about one option, e.g. ``usage_error("-k", "must be at least 1, got 0")``."""
    from unirag.config.errors import UsageError

    return UsageError(f"{option}: {message}")


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout (no rich markup)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


DtypeOpt = typer.Option(None, "--dtype", help="Weights of the pipeline's and closed-book's generator, or of the "
                        "OneGen model while it answers: float32 or bfloat16 (default: the generator's measured "
                        "choice on this CPU, OneGen float32; bfloat16 only pays where the CPU multiplies it "
                        "natively).")
HopModeOpt = typer.Option("plan", "--hop-mode", help="Pipeline multi-hop (--hops > 1): 'plan' (the reader lists "
                          "the articles the question needs once, from worked examples of similar questions; each "
                          "name is a hop of 1 passage, up to --hops in all, and the rest of --max-passages comes "
                          "from the question's own ranking) or 'followup' (the reader writes one search after "
                          "each hop).")
PlanExamplesOpt = typer.Option(None, "--plan-examples", help="--hop-mode plan: JSONL of worked examples, "
                               '{"question": ..., "articles": [...]} per line (default: the packaged FanOutQA '
                               "training-split questions).")
