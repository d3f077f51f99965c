"""Retrieve-then-read: top-k passages, numbered, into the generator's chat template; answer with sources."""

from unirag.pipeline.engine import PipelineConfig, PipelineEngine
from unirag.pipeline.prompt import SYSTEM, build_prompt

__all__ = ["SYSTEM", "PipelineConfig", "PipelineEngine", "build_prompt"]
