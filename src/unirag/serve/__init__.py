"""HTTP server (FastAPI): OpenAI-compatible chat completions and embeddings, search, ask, index
hot-swap and metrics over :class:`unirag.RAG` engines (docs/server.md)."""

from unirag.serve.app import create_app, load_engines
from unirag.serve.config import ServeConfig, model_id

__all__ = ["ServeConfig", "create_app", "load_engines", "model_id"]
