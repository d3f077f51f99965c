"""Errors raised by the index layer."""


class IndexFormatError(ValueError):
    """A missing, truncated or corrupted index folder, or an unknown factory string."""


class IndexMismatchError(ValueError):
    """Queries that do not fit the index (another encoder or dimension)."""
