"""Typed dataclass configs that round-trip to YAML or JSON files."""

from unirag.config.base import (
    ConfigBase,
    ConfigError,
    atomic_write_bytes,
    atomic_write_text,
    load_config,
    read_mapping,
)
from unirag.config.errors import UsageError
from unirag.config.paths import cache_dir

__all__ = [
    "ConfigBase",
    "ConfigError",
    "UsageError",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "load_config",
    "read_mapping",
]

from unirag.config.fs import atomic_dir, fsync_tree, sha256_file  # noqa: E402

__all__ += ["atomic_dir", "fsync_tree", "sha256_file"]
