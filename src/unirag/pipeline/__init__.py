"""Retrieve-then-read: top-k passages, numbered, into the generator's chat template; answer with sources."""

from unirag.pipeline.rag_pipeline import Answer, Pipeline, PipelineConfig, build_prompt

__all__ = ["Answer", "Pipeline", "PipelineConfig", "build_prompt"]
