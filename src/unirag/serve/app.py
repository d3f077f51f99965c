"""The HTTP server: OpenAI-compatible endpoints and native ones over :class:`unirag.RAG` engines.

``create_app(rags, config)`` builds the FastAPI app; models load in a background thread when the
server starts (``GET /ready`` answers 503 until they are loaded and their indexes verified). Each
generating engine has a :class:`~unirag.serve.scheduler.Scheduler` that decodes concurrent
requests together with :meth:`unirag.RAG.stream_batch`. See docs/server.md for the wire formats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from unirag.outputs import Answer, Finished, RetrievalEvent, TextDelta
from unirag.serve.config import MODEL_PREFIX, ServeConfig, model_id
from unirag.serve.errors import APIError, error_body, install
from unirag.serve.metrics import Metrics
from unirag.serve.middleware import Gate
from unirag.serve.scheduler import Failed, Job, QueueFull, Scheduler
from unirag.serve.schemas import (AskRequest, ChatCompletionRequest, DocumentsRequest, EmbeddingRequest, SearchRequest,
                                  SwapRequest, chunk, citation, completion, completion_id, finish_reason)

log = logging.getLogger("unirag.serve")
STATIC = Path(__file__).parent / "static"
SEARCH_MAX_BATCH = 32  # /search requests one search may answer together
Rags = dict[str, Any]
Loader = Callable[[], Rags]


def load_engines(config: ServeConfig) -> Rags:
    """Load every engine of ``config`` (``{engine name: RAG}``)."""
    from unirag.api.rag import RAG

    return {name: RAG.from_config(config.load_config(name), progress=False) for name in config.engines}


def dense_retriever(rag: Any) -> Any:
    """The engine's dense retriever (with its ``encoder``), or None."""
    r = getattr(rag.engine, "retriever", None)
    if r is not None and hasattr(r, "encoder") and hasattr(r, "embed_queries"):
        return r
    return next((s for s in getattr(r, "retrievers", []) or [] if hasattr(s, "embed_queries")), None)


class State:
    """What the routes share: the config, the engines once loaded, their schedulers, the metrics."""

    def __init__(self, loader: Loader, config: ServeConfig):
        self.loader = loader
        self.config = config
        self.metrics = Metrics()
        self.rags: Rags = {}
        self.schedulers: dict[str, Scheduler] = {}
        self.ready = threading.Event()
        self.error: str | None = None
        self.swap_lock = threading.Lock()
        self.started = time.time()
        from unirag.serve.search_batch import SearchBatcher

        self.searches = SearchBatcher(SEARCH_MAX_BATCH, lambda key, n: self.metrics.search_batch(key[0], n))

    # --- start-up and shutdown -------------------------------------------------------------
    def load(self) -> None:
        """Load the engines, verify their indexes, start the workers (the background thread)."""
        t0 = time.perf_counter()
        try:
            rags = self.loader()
            unknown = [n for n in rags if n not in self.config.engines]
            if unknown:
                raise ValueError(f"the loader returned engines {unknown} not in the config's {self.config.engines}")
            for name, rag in rags.items():
                index = rag.info().get("index")
                if index:
                    from unirag.index.folder import IndexFolder

                    IndexFolder(index).read_manifest()
            c = self.config
            for name, rag in rags.items():
                s = Scheduler(name, rag, c.max_batch, c.max_queue, c.batch_wait_ms, self.metrics, c.continuous)
                self.metrics.watch(name, s.depth, lambda s=s: s.running)
                self.schedulers[name] = s.start()
            self.rags = rags
            self.ready.set()
            log.info("unirag: %s ready in %.1f s", ", ".join(model_id(n) for n in rags), time.perf_counter() - t0)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("unirag: loading the engines failed")

    def shutdown(self) -> None:
        """Stop the workers."""
        for s in self.schedulers.values():
            s.stop(timeout=2.0)

    # --- lookups -----------------------------------------------------------------------------
    def need_ready(self) -> None:
        if not self.ready.is_set():
            msg = f"loading the engines failed: {self.error}" if self.error else "the engines are still loading"
            raise APIError(503, msg, "not_ready", headers={"Retry-After": "5"})

    def engine(self, model: str | None, param: str = "model") -> str:
        """The engine name a ``model`` (``unirag-pipeline`` or ``pipeline``) refers to; 404 if not served."""
        self.need_ready()
        if model is None:
            return next(iter(self.rags))
        name = model.removeprefix(MODEL_PREFIX)
        name = {"rag": "rag-token", "closed_book": "closed-book"}.get(name, name)
        if name not in self.rags:
            raise APIError(404, f"The model '{model}' does not exist on this server; served: "
                           f"{', '.join(model_id(n) for n in self.rags)}", "model_not_found", param)
        return name

    def retrieval_engine(self, model: str | None, param: str = "engine") -> str:
        """The engine to search with: the named one, else the pipeline, else any with an index."""
        if model is not None:
            name = self.engine(model, param)
            if not self.rags[name].info().get("index"):
                raise APIError(422, f"{param}: engine {name!r} has no index to search", "invalid_value", param)
            return name
        self.need_ready()
        for name in ("pipeline", *self.rags):
            if name in self.rags and self.rags[name].info().get("index"):
                return name
        raise APIError(422, "no served engine has an index to search", "invalid_value", param)

    def limit(self, value: int | None, most: int, param: str, setting: str) -> None:
        if value is not None and value > most:
            raise APIError(422, f"{param} = {value} is over this server's limit of {most} ({setting})",
                           "limit_exceeded", param)

    def question_limit(self, text: str, param: str) -> None:
        if len(text) > self.config.max_question_chars:
            raise APIError(422, f"{param}: {len(text)} characters, over this server's limit of "
                           f"{self.config.max_question_chars} (max_question_chars)", "limit_exceeded", param)

    def submit(self, name: str, question: str, params: Any) -> Job:
        job = Job(question, params, asyncio.get_running_loop())
        try:
            self.schedulers[name].submit(job)
        except QueueFull as exc:
            self.metrics.rejected.labels(name).inc()
            raise APIError(429, f"{exc}; retry later", "queue_full", headers={"Retry-After": "1"}) from None
        return job

    async def next_event(self, name: str, job: Job, request: Request) -> Any:
        """The job's next event; cancels it (and raises) on timeout, raises :class:`ClientGone` when
        the client has left (checked at least every 0.25 s, events arriving or not)."""
        deadline = job.submitted + self.config.request_timeout_s
        while True:
            now = time.monotonic()
            if now - job.checked >= 0.25:
                job.checked = now
                if await request.is_disconnected():
                    raise ClientGone()
            remaining = deadline - now
            if remaining <= 0:
                job.cancel()
                self.metrics.cancelled.labels(name, "timeout").inc()
                raise APIError(504, f"the request ran over {self.config.request_timeout_s:g} s (request_timeout_s)",
                               "timeout")
            try:
                return await asyncio.wait_for(job.events.get(), min(0.25, remaining))
            except asyncio.TimeoutError:
                continue

    async def answer(self, name: str, job: Job, request: Request) -> Answer:
        """Wait for the job's answer (non-streamed requests)."""
        try:
            while True:
                ev = await self.next_event(name, job, request)
                if isinstance(ev, Finished):
                    return ev.answer
                if isinstance(ev, Failed):
                    raise APIError(500, ev.message, "generation_failed")
        finally:
            self.release(name, job)

    def release(self, name: str, job: Job) -> None:
        """Stop a job whose client no longer waits for it."""
        if not job.finished and not job.cancelled:
            job.cancel()
            self.metrics.cancelled.labels(name, "disconnect").inc()


class ClientGone(Exception):
    """The client closed the connection."""


def sse(data: Any) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(rags: Union[Rags, Loader, None] = None, config: ServeConfig | None = None) -> FastAPI:
    """The app over ``rags`` (``{engine name: RAG}``, one ``RAG``, or a function returning the dict,
    called in a background thread at start-up; None: load ``config.engines``). ``config`` is
    checked now (:class:`~unirag.config.ConfigError` naming the setting)."""
    from contextlib import asynccontextmanager

    config = config or ServeConfig()
    if hasattr(rags, "stream_batch"):  # one RAG
        rags = {rags.engine.name: rags}
    if isinstance(rags, dict):
        config.engines = list(rags)
        given = rags
        loader: Loader = lambda: given  # noqa: E731
    elif rags is None:
        loader = lambda: load_engines(config)  # noqa: E731
    else:
        loader = rags
    config.validate()
    state = State(loader, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="unirag-load", daemon=True).start()
        yield
        state.shutdown()

    app = FastAPI(title="unirag", version=_version(), lifespan=lifespan,
                  description="Answers with citations over a unirag index: OpenAI-compatible chat completions "
                              "and embeddings, search, index hot-swap. See docs/server.md.")
    app.state.unirag = state
    install(app)

    # --- liveness and readiness --------------------------------------------------------------
    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> Response:
        if state.ready.is_set():
            return JSONResponse({"status": "ready", "models": [model_id(n) for n in state.rags]})
        msg = f"loading the engines failed: {state.error}" if state.error else "the engines are still loading"
        return JSONResponse({"status": "failed" if state.error else "loading", **error_body(503, msg, "not_ready")},
                            status_code=503, headers={"Retry-After": "5"})

    # --- OpenAI-compatible ---------------------------------------------------------------------
    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_id(n), "object": "model", "created": int(state.started),
                                            "owned_by": "unirag"} for n in config.engines]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        name = state.engine(req.model)
        users = [m for m in req.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise APIError(422, "messages: needs a user message with text (the question)", "invalid_value",
                           "messages")
        question = users[-1].text()
        state.question_limit(question, "messages")
        max_tokens = req.max_completion_tokens or req.max_tokens
        state.limit(max_tokens, config.max_tokens, "max_completion_tokens" if req.max_completion_tokens
                    else "max_tokens", "max_tokens")
        state.limit(req.k, config.max_k, "k", "max_k")
        state.limit(req.hops, config.max_hops, "hops", "max_hops")
        rag = state.rags[name]
        changes: dict[str, Any] = {"max_new_tokens": max_tokens or config.default_max_tokens, "seed": req.seed,
                                   "stop": [req.stop] if isinstance(req.stop, str) else list(req.stop or []),
                                   "k": req.k}
        if req.hops is not None:
            changes["hops"] = req.hops
        for field in ("temperature", "top_p", "top_k", "repetition_penalty", "no_repeat_ngram"):
            if getattr(req, field) is not None:
                changes[field] = getattr(req, field)
        params = rag.params.with_(**changes)
        model = model_id(name)
        job = state.submit(name, question, params)
        if not req.stream:
            try:
                answer = await state.answer(name, job, request)
            except ClientGone:
                return Response(status_code=499)
            return completion(completion_id(), model, answer)
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_stream(state, name, job, request, model, usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/embeddings")
    def embeddings(req: EmbeddingRequest) -> dict:
        name = state.engine(req.model)
        dense = dense_retriever(state.rags[name])
        if dense is None:
            raise APIError(422, f"model: {model_id(name)} has no dense encoder to embed with; use an engine over a "
                           "dense or hybrid index", "invalid_value", "model")
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts or len(texts) > config.max_inputs:
            raise APIError(422, f"input: give 1 to {config.max_inputs} strings (max_inputs), got {len(texts)}",
                           "invalid_value", "input")
        for i, t in enumerate(texts):
            if not t:
                raise APIError(422, f"input[{i}]: empty string", "invalid_value", "input")
            state.question_limit(t, f"input[{i}]")
        encoder = getattr(dense, "query_encoder", None) or dense.encoder
        if req.dimensions is not None and req.dimensions != encoder.dim:
            raise APIError(422, f"dimensions: this encoder gives {encoder.dim}-dimensional vectors",
                           "invalid_value", "dimensions")
        import base64

        import numpy as np

        vecs = np.asarray(dense.embed_queries(texts), dtype=np.float32)
        try:
            tokens = sum(encoder.token_counts(texts))
        except Exception:  # an embedding function without a tokenizer of its own (OneGen)
            tokens = 0
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if req.encoding_format == "base64"
                 else v.tolist()} for i, v in enumerate(vecs)]
        return {"object": "list", "data": data, "model": getattr(encoder, "name", model_id(name)),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    # --- native --------------------------------------------------------------------------------
    @app.post("/search")
    def search(req: SearchRequest) -> dict:
        name = state.retrieval_engine(req.engine)
        state.question_limit(req.query, "query")
        state.limit(req.k, config.max_k, "k", "max_k")
        rag = state.rags[name]
        k = req.k  # concurrent searches of one engine and k run as one batch (unirag.serve.search_batch)
        hits = state.searches.search((name, k), req.query, lambda queries: rag.search(list(queries), k))
        return {"query": req.query, "engine": name, "index": rag.info().get("index", ""),
                "hits": [h.to_dict() for h in hits]}

    @app.post("/ask")
    async def ask(req: AskRequest, request: Request) -> Any:
        name = state.engine(req.engine, "engine")
        state.question_limit(req.question, "question")
        state.limit(req.max_new_tokens, config.max_tokens, "max_new_tokens", "max_tokens")
        state.limit(req.k, config.max_k, "k", "max_k")
        state.limit(req.hops, config.max_hops, "hops", "max_hops")
        rag = state.rags[name]
        params = rag.params.with_(max_new_tokens=req.max_new_tokens or config.default_max_tokens, k=req.k,
                                  temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed,
                                  stop=list(req.stop), **({} if req.hops is None else {"hops": req.hops}))
        job = state.submit(name, req.question, params)
        try:
            answer = await state.answer(name, job, request)
        except ClientGone:
            return Response(status_code=499)
        return answer.to_dict() | {"index": rag.info().get("index", "")}

    @app.post("/index/swap")
    def swap(req: SwapRequest) -> dict:
        from unirag.config.base import ConfigError
        from unirag.index.errors import IndexFormatError, IndexMismatchError
        from unirag.index.folder import IndexFolder
        from unirag.models.registry import ModelNotFoundError

        state.need_ready()
        try:
            IndexFolder(req.index).read_manifest()
        except (IndexFormatError, OSError, ValueError) as exc:
            raise APIError(422, f"index: {exc}", "invalid_index", "index") from None
        swapped, skipped = [], {}
        with state.swap_lock:
            for name, rag in state.rags.items():
                if not rag.info().get("index"):
                    skipped[name] = "has no index"
                    continue
                try:
                    rag.swap_index(req.index)
                    swapped.append(name)
                except (IndexFormatError, IndexMismatchError, ConfigError, ModelNotFoundError) as exc:
                    skipped[name] = str(exc)
        if not swapped:
            why = "; ".join(f"{n}: {w}" for n, w in skipped.items())
            raise APIError(422, f"index: no served engine can use {req.index} ({why})", "index_mismatch", "index")
        info = state.rags[swapped[0]].info()
        return {"index": info.get("index", req.index), "passages": info.get("passages", 0), "swapped": swapped,
                "skipped": skipped}

    # --- live documents ----------------------------------------------------------------------------
    def update_documents(apply: Callable[[Any], dict]) -> dict:
        """Apply one update to every served index folder once (engines sharing a folder re-open
        it), under the swap lock: each engine installs the new version by one assignment, so a
        search sees the old batch or the new one, never half of it."""
        state.need_ready()
        done: dict[str, dict] = {}
        counts: dict[str, dict] = {}
        with state.swap_lock:
            for name, rag in state.rags.items():
                folder = str(rag.info().get("index") or "")
                if not folder:
                    continue
                if folder in done:
                    rag.swap_index(folder)       # another engine already wrote this folder's new version
                else:
                    done[folder] = apply(rag)
                counts[name] = done[folder]
        if not counts:
            raise APIError(422, "no served engine has an index to update", "no_index", "documents")
        return {"engines": counts}

    @app.post("/documents")
    def add_documents(req: DocumentsRequest) -> dict:
        from unirag.corpus.passage import CorpusError

        ids = [d.id for d in req.documents]
        if len(set(ids)) != len(ids):
            raise APIError(422, "documents: the same id appears twice", "duplicate_id", "documents")
        docs = [d.model_dump() for d in req.documents]
        try:
            return update_documents(lambda rag: rag.add_documents(docs))
        except CorpusError as exc:
            raise APIError(422, f"documents: {exc}", "invalid_documents", "documents") from None

    def folders() -> dict[str, list[str]]:
        """Each served index folder and the engines reading it (the first one writes it)."""
        state.need_ready()
        out: dict[str, list[str]] = {}
        for name, rag in state.rags.items():
            folder = str(rag.info().get("index") or "")
            if folder:
                out.setdefault(folder, []).append(name)
        if not out:
            raise APIError(422, "no served engine has an index to update", "no_index", "documents")
        return out

    def ingest_documents(apply: Callable[[Any], Any]) -> dict[str, Any]:
        """Run one ingest operation (``apply(rag)`` -> an ``IngestResult``; the RAG writes its index
        folder and re-opens it) on every served index folder once, under the swap lock; the other
        engines reading a folder that was written re-open it too (the new version is installed by one
        assignment: a search sees the old version or the new one). Returns the per-engine reports
        (``IngestResult.to_dict()`` without the server's paths)."""
        reports: dict[str, dict] = {}
        with state.swap_lock:
            for folder, names in folders().items():
                res = apply(state.rags[names[0]])
                for i, name in enumerate(names):
                    if res.written and i > 0:
                        state.rags[name].swap_index(folder)
                    reports[name] = _ingest_report(res)
        return {"ok": all(r["ok"] for r in reports.values()), "engines": reports}

    @app.post("/documents/files")
    async def add_document_files(request: Request) -> dict:
        import tempfile

        from starlette.concurrency import run_in_threadpool

        state.need_ready()
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise APIError(422, "files: send the files as multipart/form-data, each in a part named 'files'",
                           "invalid_value", "files")
        try:
            form = await request.form(max_files=config.max_inputs, max_fields=16)
        except AssertionError:  # starlette: python-multipart is not installed
            raise APIError(501, "file uploads need the python-multipart package on the server "
                           "(pip install 'unirag[serve]')", "not_supported", "files") from None
        except Exception as exc:  # MultiPartException and parser errors: a malformed body
            raise APIError(422, f"files: not a readable multipart body ({exc})", "invalid_value", "files") from None
        try:
            uploads = [v for k, v in form.multi_items() if k == "files"]
            if not uploads or any(isinstance(u, str) for u in uploads):
                raise APIError(422, "files: give one or more files, each in a part named 'files'", "invalid_value",
                               "files")
            prefix = _upload_folder(form.get("folder"))
            names = [_upload_name(u.filename) for u in uploads]
            dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
            if dup is not None:
                raise APIError(422, f"files: the name {dup!r} is given twice", "duplicate_file", "files")
            with tempfile.TemporaryDirectory(prefix="unirag-upload-") as tmp:
                root = Path(tmp)
                paths = []
                for u, name in zip(uploads, names):
                    path = root / prefix / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(await u.read())
                    paths.append(path)

                def apply(rag: Any) -> Any:
                    return rag.add_files(paths, root=root, record_paths=False)

                return await run_in_threadpool(_ingest_errors, ingest_documents, apply)
        finally:
            await form.close()

    @app.get("/documents")
    def get_documents(engine: Union[str, None] = None, status: Union[str, None] = None) -> dict:
        name = state.retrieval_engine(engine)
        rag = state.rags[name]
        folder = str(rag.info().get("index"))
        docs = rag.documents()
        if status is not None:
            docs = [d for d in docs if d["status"] == status]
        return {"engine": name, "index": folder, "count": len(docs),
                "documents": [{k: v for k, v in d.items() if k != "path" or v} for d in docs]}

    @app.delete("/documents/{doc_id:path}")
    def delete_document(doc_id: str) -> dict:
        return _ingest_errors(ingest_documents, lambda rag: rag.remove_files([doc_id]))

    @app.get("/info")
    def info() -> dict:
        ready = state.ready.is_set()
        engines = [{"name": n, "model": model_id(n), **state.rags[n].info()} for n in state.rags] if ready else \
            [{"name": n, "model": model_id(n)} for n in config.engines]
        primary = next((e for e in engines if e.get("index")), {})
        index = str(primary.get("index", "") or "")
        return {"version": _version(), "ready": ready, "error": state.error, "engines": engines,
                "models": [model_id(n) for n in config.engines],
                "index": index, "index_name": Path(index).name if index else "",
                "passages": primary.get("passages", 0),
                "generators": sorted({str(e["generator"]) for e in engines if e.get("generator")}),
                "auth": config.api_key is not None,
                "limits": {"max_question_chars": config.max_question_chars, "max_k": config.max_k,
                           "max_tokens": config.max_tokens, "max_body_bytes": config.max_body_bytes,
                           "max_batch": config.max_batch, "max_queue": config.max_queue}}

    @app.get("/metrics")
    def metrics() -> Response:
        body, ctype = state.metrics.render()
        return Response(body, media_type=ctype)

    # --- the web page, when its files are there -------------------------------------------------
    open_prefixes: tuple[str, ...] = ()
    if (STATIC / "index.html").is_file():
        from fastapi.responses import FileResponse
        from fastapi.staticfiles import StaticFiles

        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(STATIC / "index.html")

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
        open_prefixes = ("/static/",)

    app.add_middleware(Gate, metrics=state.metrics, api_key=config.api_key, max_body_bytes=config.max_body_bytes,
                       open_prefixes=open_prefixes)
    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors, allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    return app


async def _stream(state: State, name: str, job: Job, request: Request, model: str, usage: bool) -> AsyncIterator[str]:
    """The server-sent events of one streamed chat completion (docs/server.md)."""
    cid, created = completion_id(), int(time.time())
    started, pending = False, ""
    try:
        yield sse(chunk(cid, model, created, {"role": "assistant", "content": ""}))
        while True:
            try:
                ev = await state.next_event(name, job, request)
            except ClientGone:
                return
            except APIError as exc:  # timeout: the error as an event, then the end
                yield sse(error_body(exc.status, exc.message, exc.code))
                break
            if isinstance(ev, RetrievalEvent):
                yield sse(chunk(cid, model, created, {}, None,
                                unirag={"type": "retrieval", "step": ev.step.step, "query": ev.step.query,
                                        "sources": [citation(s) for s in ev.sources]}))
            elif isinstance(ev, TextDelta):
                # the answer text is stripped: hold back leading and trailing white space
                text = pending + ev.text
                if not started:
                    text = text.lstrip()
                body = text.rstrip()
                pending = text[len(body):]
                if body:
                    started = True
                    yield sse(chunk(cid, model, created, {"content": body}))
            elif isinstance(ev, Finished):
                a = ev.answer
                yield sse(chunk(cid, model, created, {}, finish_reason(a),
                                citations=[citation(s) for s in a.sources]))
                if usage:
                    yield sse(chunk(cid, model, created, None, None, usage=a.usage.to_dict()))
                break
            elif isinstance(ev, Failed):
                yield sse(error_body(500, ev.message, "generation_failed"))
                break
        yield "data: [DONE]\n\n"
    finally:
        state.release(name, job)


def _upload_name(filename: str | None) -> str:
    """The name an uploaded file is saved (and indexed) under: its base name."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", "..") or "\0" in name:
        raise APIError(422, f"files: an uploaded file needs a file name, got {filename!r}", "invalid_value", "files")
    return name


def _upload_folder(value: Any) -> str:
    """The optional ``folder`` field: a relative path the uploaded files' ids are put under."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise APIError(422, "folder: a relative path, as a form field", "invalid_value", "folder")
    parts = [p for p in value.replace("\\", "/").split("/") if p]
    if value.startswith("/") or any(p in (".", "..") or "\0" in p for p in parts):
        raise APIError(422, f"folder: a relative path without '.' or '..' parts, got {value!r}", "invalid_value",
                       "folder")
    return "/".join(parts)


def _ingest_report(res: Any) -> dict[str, Any]:
    """An ``IngestResult`` as the server answers it: no server paths."""
    d = res.to_dict()
    d.pop("folder", None)
    d.pop("seconds", None)
    if d.get("update"):
        d["update"].pop("folder", None)
    for doc in d["documents"]:
        doc.pop("path", None)
    return d


def _ingest_errors(fn: Callable[..., dict], *args: Any) -> dict:
    """``fn(*args)``, with the library's errors as JSON errors (bad input 422, unknown 404)."""
    from unirag.config.base import ConfigError
    from unirag.corpus.passage import CorpusError
    from unirag.index.errors import IndexFormatError, IndexMismatchError
    from unirag.retrieval.update import UnknownPassageError

    try:
        return fn(*args)
    except UnknownPassageError as exc:
        raise APIError(404, str(exc), "document_not_found", "id") from None
    except (IndexMismatchError, IndexFormatError) as exc:
        raise APIError(422, str(exc), "index_mismatch", "index") from None
    except (ConfigError, CorpusError) as exc:
        raise APIError(422, str(exc), "invalid_documents", "documents") from None


def _version() -> str:
    from unirag import __version__

    return __version__
