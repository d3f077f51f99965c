"""Error types for bad user input raised by library code (the CLI reports them as one line, exit 2)."""

from __future__ import annotations

from unirag.config.base import ConfigError


class UsageError(ConfigError):
    """A bad option or argument value (e.g. an unknown retriever kind); the message names the option."""


__all__ = ["ConfigError", "UsageError"]
