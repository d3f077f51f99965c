"""The one door: :class:`RAG` over every engine, with :class:`LoadConfig` to rebuild it."""

from unirag.api.rag import ENGINES, RAG, RETRIEVERS, LoadConfig, engine_name, load_generator

__all__ = ["ENGINES", "RAG", "RETRIEVERS", "LoadConfig", "engine_name", "load_generator"]
