"""The unit of retrieval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class CorpusError(ValueError):
    """Bad corpus input; the message names the file and line."""


@dataclass
class Passage:
    """A retrievable passage: a unique ``id``, a ``title``, the ``text`` and free-form ``meta``."""

    id: str
    text: str
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``id``, ``title``, ``text`` then the metadata fields."""
        return {"id": self.id, "title": self.title, "text": self.text, **self.meta}

    @property
    def contents(self) -> str:
        """``"title. text"``, the string that encoders embed."""
        return f"{self.title}. {self.text}" if self.title else self.text
