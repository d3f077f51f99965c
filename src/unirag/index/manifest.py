"""The manifest of a saved index folder: what built it and checksums of every file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unirag.config.base import ConfigBase

FORMAT = "unirag-index/1"


@dataclass
class Manifest(ConfigBase):
    """Everything needed to check and rebuild an index folder.

    ``encoder`` names the model whose vectors the index holds (queries must come from it);
    ``corpus_sha256`` / ``count`` identify the documents; ``files`` maps each file to its SHA-256.
    """

    dim: int
    factory: str = "Flat"
    metric: str = "ip"
    count: int = 0
    encoder: str = ""
    encoder_info: dict[str, Any] = field(default_factory=dict)
    corpus_sha256: str = ""
    corpus_count: int = 0
    files: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
