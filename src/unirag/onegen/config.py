"""``OneGenConfig``: the special retrieval tokens, their roles, passage markers and loss settings.

Saved as ``onegen_config.json`` next to the model (or adapter) and tokenizer, so a trained model
carries its own token names and roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from unirag.config.base import ConfigBase
from unirag.config.paths import cache_dir

CONFIG_FILE = "onegen_config.json"
ROLES = ("query", "document", "mention", "entity")
# A retrieval token (left) is scored against documents that end with its partner token (right).
PARTNER = {"query": "document", "mention": "entity"}


def default_onegen_dir() -> Path:
    """Where the default trained model lives: ``<cache>/onegen/smollm2-onegen``."""
    return cache_dir() / "onegen" / "smollm2-onegen"


@dataclass
class TokenSpec(ConfigBase):
    """One special token: its ``role``, its surface ``token`` and a ``description`` of the role
    (the new embedding row starts as the mean embedding of the description's tokens)."""

    role: str
    token: str
    description: str


def default_tokens() -> list[TokenSpec]:
    """The four OneGen tokens: query ``[RQ]``, document ``[RD]``, mention ``[RM]``, entity ``[RE]``."""
    return [
        TokenSpec("query", "[RQ]", "retrieve a relevant document for the question so far"),
        TokenSpec("document", "[RD]", "summary of this document for retrieval"),
        TokenSpec("mention", "[RM]", "link the entity mention just written"),
        TokenSpec("entity", "[RE]", "summary of this entity for linking"),
    ]


@dataclass
class OneGenConfig(ConfigBase):
    """Token names and roles, passage markers, and the loss of a OneGen model.

    ``loss``: ``bpr`` (paper default: log-sigmoid of positive minus hard-negative score) or
    ``infonce`` (softmax over the positive, in-batch documents and hard negatives at
    ``temperature``). ``normalize``: ``vector`` L2-normalises each retrieval vector (correct);
    ``sequence`` reproduces the public reference code, which normalises hidden states over the
    sequence axis before picking positions (training then disagrees with inference).
    Total loss = ``lambda_lm * LM + lambda_r * contrastive``. ``max_doc_tokens`` cuts a document
    before it is embedded; ``passage_words`` cuts a passage inserted after a query token, the same
    in the training data and at inference.
    """

    base_model: str = "smollm2-135m-instruct"
    tokens: list[TokenSpec] = field(default_factory=default_tokens)
    passage_start: str = "<passage>"
    passage_end: str = "</passage>"
    loss: Literal["bpr", "infonce"] = "bpr"
    temperature: float = 0.05
    lambda_lm: float = 1.0
    lambda_r: float = 1.0
    normalize: Literal["vector", "sequence"] = "vector"
    max_doc_tokens: int = 96
    passage_words: int = 48
    system_prompt: str = ""

    def __post_init__(self) -> None:
        roles = [t.role for t in self.tokens]
        if len(set(roles)) != len(roles) or len({t.token for t in self.tokens}) != len(self.tokens):
            raise ValueError(f"duplicate token roles or names in {[(t.role, t.token) for t in self.tokens]}")
        for need in ("query", "document"):
            if need not in roles:
                raise ValueError(f"OneGenConfig.tokens: the {need!r} role is required")

    def token(self, role: str) -> str:
        """The surface form of the token with ``role``."""
        for spec in self.tokens:
            if spec.role == role:
                return spec.token
        raise KeyError(f"no token with role {role!r} (roles: {[t.role for t in self.tokens]})")

    def has_role(self, role: str) -> bool:
        """Whether a token with ``role`` is defined."""
        return any(t.role == role for t in self.tokens)

    @property
    def retrieval_roles(self) -> list[str]:
        """Roles whose tokens are scored against documents (``query``, ``mention`` if defined)."""
        return [r for r in PARTNER if self.has_role(r) and self.has_role(PARTNER[r])]
