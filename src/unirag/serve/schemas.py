"""Request bodies and the OpenAI-compatible response shapes (chat completions, chunks, citations)."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from unirag.outputs import Answer, Source

SNIPPET_CHARS = 300
FINISH = {"stop": "stop", "eos": "stop", "length": "length", "cancelled": "cancelled"}


# --- OpenAI: chat completions ---------------------------------------------------------------
class ChatMessage(BaseModel):
    """One message; ``content`` a string or a list of parts (only ``text`` parts are read)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (text parts joined by newlines)."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type", "text") == "text")


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with ``usage`` and no choices."""

    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown OpenAI fields are accepted and ignored; ``k`` (passages),
    ``hops`` (multi-hop retrieval of the pipeline engine) and ``top_k`` come as extra body fields (the
    ``openai`` client's ``extra_body``)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)
    k: int | None = Field(None, ge=0)
    hops: int | None = Field(None, ge=1)
    repetition_penalty: float | None = Field(None, gt=0.0)
    no_repeat_ngram: int | None = Field(None, ge=0, le=64)


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: ``input`` one string or a list; ``encoding_format`` float or base64."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


# --- native ----------------------------------------------------------------------------------
class SearchRequest(BaseModel):
    """``POST /search``."""

    query: str = Field(min_length=1)
    k: int = Field(5, ge=1)
    engine: str | None = None


class AskRequest(BaseModel):
    """``POST /ask``: the answer JSON schema of :meth:`unirag.outputs.Answer.to_dict`."""

    question: str = Field(min_length=1)
    engine: str | None = None
    k: int | None = Field(None, ge=0)
    hops: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class DocumentIn(BaseModel):
    """One passage to add or replace: ``id``, ``text``, optional ``title``; other fields are kept
    as metadata."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    title: str = ""


class DocumentsRequest(BaseModel):
    """``POST /documents``: passages added to (or replacing those with the same id in) the live
    index, as one atomic batch."""

    documents: list[DocumentIn] = Field(min_length=1)


class SwapRequest(BaseModel):
    """``POST /index/swap``: answer from another index folder from now on."""

    index: str = Field(min_length=1)


# --- responses ---------------------------------------------------------------------------------
def completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def citation(s: Source) -> dict[str, Any]:
    """One entry of ``citations``: the marker ``number``, the passage ``id``/``title``/``meta``, a
    ``snippet``, the retriever's ``score``, ``step`` (OneGen), ``prob`` and ``spans`` (RAG)."""
    snippet = s.text if len(s.text) <= SNIPPET_CHARS else s.text[:SNIPPET_CHARS].rstrip() + "…"
    return {"number": s.number, "id": s.id, "title": s.title, "snippet": snippet, "score": round(float(s.score), 6),
            "step": s.step, "prob": None if s.prob is None else round(float(s.prob), 6),
            "spans": [sp.to_dict() for sp in s.spans], "meta": s.meta}


def finish_reason(answer: Answer) -> str:
    """OpenAI's finish reason for the engine's."""
    return FINISH.get(answer.finish_reason, answer.finish_reason)


def completion(cid: str, model: str, answer: Answer) -> dict[str, Any]:
    """The non-streamed ``chat.completion`` object, with top-level ``citations`` and ``unirag``."""
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "logprobs": None, "finish_reason": finish_reason(answer)}],
            "usage": answer.usage.to_dict(),
            "citations": [citation(s) for s in answer.sources],
            "unirag": {"engine": answer.engine, "short_answer": answer.short,
                       "trace": [t.to_dict() for t in answer.trace], "timings": answer.timings.to_dict()}}


def chunk(cid: str, model: str, created: int, delta: dict[str, Any] | None = None,
          finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` (``choices`` empty when ``delta`` is None and no finish)."""
    choices = [] if delta is None and finish is None else [
        {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices, **extra}
