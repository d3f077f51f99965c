"""A FastAPI app over one :class:`unirag.RAG`: JSON in, JSON out, the door's answer schema."""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, Field


class SearchRequest(BaseModel):
    """Body of ``POST /search``."""

    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=100)


class AskRequest(BaseModel):
    """Body of ``POST /ask``."""

    question: str = Field(min_length=1, max_length=4000)
    k: int | None = Field(None, ge=1, le=20)
    max_new_tokens: int = Field(96, ge=1, le=1024)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = None


def create_app(rag: Any):
    """Build the app over a loaded :class:`unirag.RAG` (models load before the app exists)."""
    from fastapi import FastAPI

    from unirag.sampling_params import SamplingParams

    app = FastAPI(title="unirag", description="Search and answer with sources over a unirag index.")
    lock = threading.Lock()  # one generation at a time: the model is shared

    @app.get("/health")
    def health() -> dict:
        info = rag.info()
        return {"status": "ok", "engine": info.get("engine"), "passages": info.get("passages", 0)}

    @app.post("/search")
    def search(req: SearchRequest) -> dict:
        hits = rag.search(req.query, req.k)
        return {"query": req.query, "hits": [h.to_dict() for h in hits]}

    @app.post("/ask")
    def ask(req: AskRequest) -> dict:
        params = SamplingParams(max_new_tokens=req.max_new_tokens, temperature=req.temperature, seed=req.seed,
                                k=req.k)
        with lock:
            return rag.ask(req.question, params).to_dict()

    return app
