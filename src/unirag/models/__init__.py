"""Offline model loading (local folder, hub id, packaged GGUF converted once), encoders and generators."""

from unirag.models.registry import (
    DEFAULT_ENCODER,
    DEFAULT_GENERATOR,
    ModelNotFoundError,
    resolve_model,
)

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_GENERATOR",
    "Encoder",
    "Generator",
    "ModelNotFoundError",
    "load_causal_lm",
    "resolve_model",
]


def __getattr__(name: str):  # lazy: keep torch/transformers out of `import unirag.models`
    if name == "Encoder":
        from unirag.models.encoder import Encoder

        return Encoder
    if name == "Generator":
        from unirag.models.generator import Generator

        return Generator
    if name == "load_causal_lm":
        from unirag.models.generator import load_causal_lm

        return load_causal_lm
    raise AttributeError(name)
