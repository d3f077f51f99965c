"""Settings of a RAG model (Lewis et al. 2020): parts, retrieval depth, prompt and loss options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from unirag.config.base import ConfigBase

Variant = Literal["token", "sequence"]


@dataclass
class RagConfig(ConfigBase):
    """What a :class:`~unirag.rag.model.RagModel` is made of and how it scores.

    ``doc_score_scale`` multiplies the inner products q·d before the softmax that gives p(z|x):
    1 for unnormalised DPR vectors, about 20 for L2-normalised sentence encoders (cosine scores
    in [-1, 1] would otherwise give a near-uniform prior).
    """

    variant: Variant = "token"
    question_encoder: str = "all-minilm-l6-v2"
    generator: str = "smollm2-135m-instruct"
    index: str | None = None
    n_docs: int = 4
    doc_score_scale: float = 1.0
    max_passage_tokens: int = 96
    max_question_tokens: int = 64
    max_answer_tokens: int = 32
    label_smoothing: float = 0.0
    exclude_bos_score: bool = False
    system_prompt: str = "Answer the question with a short phrase, using the passage."
    freeze_question_encoder: bool = False
