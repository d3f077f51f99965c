"""A FastAPI app over a retriever and, lazily, a generator: JSON in, JSON out."""

from typing import Any

from pydantic import BaseModel, Field


class SearchRequest(BaseModel):
    """Body of ``POST /search``."""

    query: str = Field(min_length=1)
    k: int = Field(5, ge=1, le=1000)
    retriever: str = "dense"


class AskRequest(BaseModel):
    """Body of ``POST /ask``."""

    question: str = Field(min_length=1)
    k: int = Field(3, ge=1, le=20)
    retriever: str = "dense"
    max_new_tokens: int = Field(96, ge=1, le=1024)


def create_app(retrievers: dict[str, Any], generator_name: str = "smollm2-135m-instruct", generator: Any = None):
    """Build the app. ``retrievers`` maps a kind (``dense``, ``bm25``, ``hybrid``) to a retriever;
    the generator loads on the first ``/ask`` unless given."""
    from fastapi import FastAPI, HTTPException

    from unirag.pipeline import Pipeline, PipelineConfig

    app = FastAPI(title="unirag", description="Search and answer with sources over a unirag index.")
    import threading

    state: dict[str, Any] = {"generator": generator}
    lock = threading.Lock()  # one generation at a time: the model is shared

    def pick(kind: str) -> Any:
        if kind not in retrievers:
            raise HTTPException(422, f"unknown retriever {kind!r}; this server has {sorted(retrievers)}")
        return retrievers[kind]

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "retrievers": sorted(retrievers),
                "passages": len(next(iter(retrievers.values())).store)}

    @app.post("/search")
    def search(req: SearchRequest) -> dict:
        res = pick(req.retriever).search([req.query], req.k)
        return {"query": req.query, "retriever": req.retriever, "hits": res.hits(0)}

    @app.post("/ask")
    def ask(req: AskRequest) -> dict:
        retriever = pick(req.retriever)
        with lock:
            if state["generator"] is None:
                from unirag.models import Generator

                state["generator"] = Generator.from_pretrained(generator_name)
            pipe = Pipeline(retriever, state["generator"], PipelineConfig(k=req.k, max_new_tokens=req.max_new_tokens))
            return pipe.ask(req.question).to_dict()

    return app
