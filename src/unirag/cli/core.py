"""``unirag index build|info``, ``unirag search``, ``unirag ask``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unirag.cli.common import DtypeOpt, HopModeOpt, PlanExamplesOpt, err, out, print_json, usage_error
from unirag.cli.groups import app, index_app
from unirag.models.registry import DEFAULT_GENERATOR

IndexOpt = typer.Option(None, "--index", "-i", help="Index folder (default: the built-in Wikipedia index, built on first use).")
RetrieverOpt = typer.Option("dense", "--retriever", "-r", help="dense (FAISS + encoder), bm25, or hybrid (reciprocal rank fusion of both).")


def _index_dir(index: Optional[Path]) -> Path:
    from unirag.retrieval import ensure_default_index

    return index if index is not None else ensure_default_index()


@index_app.command("build")
def index_build(
    corpus: str = typer.Argument("wiki", help="A .jsonl (id, title, text, extra fields kept), a DPR .tsv (id, text, title), a folder of .txt/.md, or 'wiki' for the built-in 10,033 Wikipedia summaries."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Index folder to write (replaced atomically only when the build succeeds)."),
    encoder: str = typer.Option("all-minilm-l6-v2", help="Encoder: built-in alias, local folder or hub id."),
    factory: str = typer.Option("Flat", help="FAISS factory string: Flat, HNSW32, IVF4096,Flat, IVF4096,PQ64, SQ8 ..."),
    bm25: bool = typer.Option(True, "--bm25/--no-bm25", help="Also build a BM25 index (needed by --retriever bm25/hybrid)."),
    dense: bool = typer.Option(True, "--dense/--no-dense", help="Build the dense FAISS index."),
    split_words: int = typer.Option(0, help="Split documents into passages of this many words (DPR used 100); 0 keeps documents whole."),
    overlap: int = typer.Option(0, help="Words shared by consecutive passages when splitting."),
    batch_size: int = typer.Option(64, help="Embedding batch size at most, in passages (batches are formed from length-sorted passages)."),
    batch_tokens: int = typer.Option(2048, "--batch-tokens", help="Embedding batch size at most, in padded tokens "
                                     "(small batches stay in a CPU's caches; raise it on a GPU); 0 = --batch-size only."),
    threads: int = typer.Option(0, "--threads", help="Threads for embedding (ONNX Runtime or torch, and FAISS); 0 = every core this "
                                "process may use. Restored after the build."),
    int8: bool = typer.Option(False, "--int8/--fp32", help="Embed with a dynamically quantised int8 encoder "
                              "(faster on CPU, slightly different vectors). Recorded in the manifest "
                              "(encoder NAME+int8), so queries are embedded the same way."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    ray: bool = typer.Option(False, "--ray", help="Embed on a Ray cluster (Ray Data, a pool of encoder actors): joins "
                             "--ray-address, else $RAY_ADDRESS, else starts a local cluster. The folder is the same as without it."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); implies --ray."),
    ray_concurrency: int = typer.Option(1, "--ray-concurrency", help="Encoder actors in the Ray pool."),
    ray_batch_size: int = typer.Option(1024, "--ray-batch-size", help="Passages per actor call."),
    ray_cpus: float = typer.Option(1.0, "--ray-cpus", help="CPUs per encoder actor."),
    ray_gpus: float = typer.Option(0.0, "--ray-gpus", help="GPUs per encoder actor."),
) -> None:
    """Build an index folder: doc store, dense FAISS index and BM25, with a checksummed manifest."""
    from unirag.corpus import read_corpus, split_passages
    from unirag.index.folder import IndexFolder
    from unirag.retrieval import build_index

    if not dense and not bm25:
        raise usage_error("--no-dense --no-bm25", "nothing to build: keep --dense and/or --bm25")
    for option, value, least in (("--split-words", split_words, 0), ("--overlap", overlap, 0),
                                 ("--batch-size", batch_size, 1), ("--batch-tokens", batch_tokens, 0),
                                 ("--threads", threads, 0)):
        if value < least:
            raise usage_error(option, f"must be at least {least}, got {value}")
    if overlap and not split_words:
        raise usage_error("--overlap", "needs --split-words (documents are kept whole without it)")
    if split_words and overlap >= split_words:
        raise usage_error("--overlap", f"must be smaller than --split-words ({split_words}), got {overlap}")
    if corpus == "wiki":
        from unirag.data import wiki_passages

        passages = iter(wiki_passages())
    else:
        passages = read_corpus(corpus)
    if split_words:
        passages = split_passages(passages, split_words, overlap)
    ray_opts = None
    if ray or ray_address:
        ray_opts = {"address": ray_address or True, "concurrency": ray_concurrency, "batch_size": ray_batch_size,
                    "num_cpus": ray_cpus, "num_gpus": ray_gpus}
    build_index(passages, out_dir, encoder=encoder, factory=factory, dense=dense, bm25=bm25,
                batch_size=batch_size, progress=not as_json, ray=ray_opts, threads=threads,
                encoder_dtype="int8" if int8 else None, batch_tokens=batch_tokens)
    manifest = IndexFolder(out_dir).read_manifest()
    if as_json:
        print_json({"path": str(out_dir), **manifest.to_dict()})
    else:
        out.print(f"[green]built[/] {out_dir}: {manifest.corpus_count} passages, "
                  f"{manifest.extra.get('kinds')}, factory {manifest.factory or '-'}, encoder {manifest.encoder or '-'}")


@index_app.command("info")
def index_info(
    path: Path = typer.Argument(..., help="Index folder."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check every file's SHA-256 against the manifest."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show an index folder's manifest (and verify its checksums)."""
    from unirag.index.folder import IndexFolder

    folder = IndexFolder(path)
    m = folder.read_manifest()
    if verify:
        folder.verify(m)
    if as_json:
        print_json({"path": str(path), "verified": verify, **m.to_dict()})
        return
    for key in ("format", "dim", "factory", "metric", "count", "encoder", "corpus_count", "corpus_sha256"):
        out.print(f"{key:>14}: {getattr(m, key)}")
    out.print(f"{'files':>14}: {len(m.files)}" + (" (checksums OK)" if verify else ""))


@app.command("search")
def search(
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(5, "-k", help="Number of passages."),
    index: Optional[Path] = IndexOpt,
    retriever: str = RetrieverOpt,
    encoder: Optional[str] = typer.Option(None, help="Query encoder (default: the one that built the index)."),
    engine: str = typer.Option("pipeline", "--engine", "-e", help="pipeline (the index's encoder, BM25 or hybrid) "
                               "or onegen (a OneGen model's own query vectors over its index)."),
    model: Optional[str] = typer.Option(None, "--model", help="OneGen model folder (with --engine onegen)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Search an index: a table of rank, score, id, title and snippet (no generator is loaded)."""
    from rich.table import Table

    from unirag.api import RAG, LoadConfig
    from unirag.retrieval.loader import check_retriever_kind

    if k < 1:
        raise usage_error("-k", f"must be at least 1, got {k}")
    if engine not in ("pipeline", "onegen"):
        raise usage_error("--engine", f"search runs on pipeline or onegen, not {engine!r}")
    check_retriever_kind(retriever, "--retriever")
    cfg = LoadConfig(engine, str(index) if index else None, None, retriever, model, encoder=encoder).validate()
    hits = [{"rank": s.number, **s.to_dict()} for s in RAG.from_config(cfg, progress=not as_json).search(query, k)]
    if as_json:
        print_json({"query": query, "retriever": "onegen" if engine == "onegen" else retriever, "hits": hits})
        return
    table = Table(title=f"{retriever if engine == 'pipeline' else 'onegen'} top-{k}: {query}")
    for col in ("rank", "score", "id", "title", "snippet"):
        table.add_column(col, overflow="fold" if col == "snippet" else "ellipsis")
    for h in hits:
        text = h["text"]
        table.add_row(str(h["rank"]), f"{h['score']:.4f}", h["id"], h["title"], text[:160] + ("…" if len(text) > 160 else ""))
    out.print(table)


EngineOpt = typer.Option("pipeline", "--engine", "-e", help="pipeline (retrieve-then-read), rag-token / rag-sequence "
                         "(classic RAG; 'rag' = rag-token), onegen (one model retrieves while it generates), "
                         "closed-book (the generator alone).")


def sampling_options(max_new_tokens: int, temperature: float, top_p: float, top_k: int, seed: Optional[int],
                     stop: Optional[list[str]], k: Optional[int]):
    """The request's :class:`unirag.SamplingParams` from command-line options (checked, names the field)."""
    from unirag.sampling_params import SamplingParams

    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                          seed=seed, stop=list(stop or []), k=k)


def print_sources(answer) -> None:
    """The numbered sources of an answer, one line each."""
    if not answer.sources:
        out.print("\n[dim]no passage retrieved[/]")
        return
    out.print("\n[bold]Sources[/]" + (" [dim](the answer says they do not hold the answer)[/]"
                                      if getattr(answer, "abstained", False) else ""))
    cited = set(getattr(answer, "cited", None) or [])
    for s in answer.sources:
        ident = "" if s.id == s.title else f"{s.id}, "
        if s.meta.get("cite"):  # a document's passage: file, page, section
            ident = f"{s.meta['cite']}, "
        step = "" if s.step is None else f", step {s.step}"
        step += "" if s.meta.get("hop") is None else f", hop {s.meta['hop']}"
        mark = " [green]cited[/]" if s.number in cited else ""
        out.print(f"  [{s.number}] {s.title} [dim]({ident}score {s.score:.3f}{step})[/]{mark}", highlight=False)


@app.command("ask")
def ask(
    question: str = typer.Argument(..., help="The question."),
    engine: str = EngineOpt,
    k: Optional[int] = typer.Option(None, "-k", min=0, help="Passages per question (pipeline 3, RAG 4) or per "
                                    "query token (OneGen 1)."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="Index folder (default: the built-in Wikipedia "
                                         "index, or the OneGen model's own index of it; built on first use)."),
    retriever: str = RetrieverOpt,
    generator: str = typer.Option(DEFAULT_GENERATOR, help="Generator of the pipeline and RAG engines: "
                                  "built-in alias (qwen2.5-coder-0.5b-instruct; smollm2 is smaller and faster), local "
                                  "folder or hub id."),
    dtype: Optional[str] = DtypeOpt,
    model: Optional[str] = typer.Option(None, "--model", help="A trained RAG or OneGen model folder (default for "
                                        "onegen: the trained default, else the packaged adapter)."),
    decoding: Optional[str] = typer.Option(None, help="RAG decoding: greedy or beam (rag-token), thorough or fast "
                                           "(rag-sequence)."),
    max_new_tokens: int = typer.Option(96, min=1, help="Maximum answer length in tokens."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy; above 0 samples."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (with --temperature > 0)."),
    top_k: int = typer.Option(0, min=0, help="Sample among the k likeliest tokens (0 = off)."),
    seed: Optional[int] = typer.Option(None, help="Seed of this request's sampling."),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Print the answer as it is generated."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer in the stable JSON schema (docs/api.md)."),
    hops: int = typer.Option(1, "--hops", min=1, help="Pipeline: retrievals per question (1 = single-shot; more: "
                             "the reader writes a follow-up search between them, -k passages per hop)."),
    max_passages: Optional[int] = typer.Option(None, "--max-passages", min=1, help="Pipeline multi-hop: passages "
                                               "read in all (default hops x k)."),
    hop_mode: str = HopModeOpt,
    plan_examples: Optional[Path] = PlanExamplesOpt,
) -> None:
    """Answer a question from retrieved passages; prints the answer and its numbered sources."""
    from unirag.api import RAG, LoadConfig
    from unirag.outputs import Finished, RetrievalEvent, TextDelta

    from unirag.retrieval.loader import check_retriever_kind

    check_retriever_kind(retriever, "--retriever")
    cfg = LoadConfig(engine, str(index) if index else None, generator, retriever, model, k, decoding,
                     hops=hops, max_passages=max_passages, dtype=dtype, hop_mode=hop_mode,
                     plan_examples=str(plan_examples) if plan_examples else None).validate()
    params = sampling_options(max_new_tokens, temperature, top_p, top_k, seed, stop, k)
    rag = RAG.from_config(cfg, params=params, progress=not as_json)
    if as_json or not stream:
        answer = rag.ask(question)
        if as_json:
            print_json(answer.to_dict() | {"index": rag.info().get("index", "")})
            return
        out.print(answer.text, highlight=False, markup=False)
    else:
        answer = None
        for ev in rag.stream(question):
            if isinstance(ev, TextDelta):
                out.print(ev.text, end="", highlight=False, soft_wrap=True, markup=False)
            elif isinstance(ev, RetrievalEvent) and ev.step.step is not None and hops > 1:  # a hop
                got = ", ".join(s.title for s in ev.sources) or "nothing new"
                out.print(f"[dim]hop {ev.step.step}: {ev.step.query} \u27e8{got}\u27e9[/]", highlight=False)
            elif isinstance(ev, RetrievalEvent) and ev.step.step is not None:  # retrieval inside generation
                got = ", ".join(s.title for s in ev.sources) or "nothing above the threshold"
                out.print(f" [dim]\u27e8retrieved: {got}\u27e9[/] ", end="", highlight=False)
            elif isinstance(ev, Finished):
                answer = ev.answer
        out.print()
    print_sources(answer)


def _per_engine(values: list[str], option: str, engines: list[str], per: dict[str, dict[str, str]],
                key: str) -> Optional[str]:
    """``PATH`` (every engine) or ``ENGINE=PATH`` (one engine) values of a repeatable option."""
    from unirag.api.rag import ALIASES, ENGINES, engine_name

    default = None
    for v in values:
        head, sep, tail = v.partition("=")
        if sep and (head in ENGINES or head in ALIASES):
            if engine_name(head) not in engines:
                raise usage_error(option, f"{head!r} is not served (--engine {','.join(engines)})")
            per.setdefault(engine_name(head), {})[key] = tail
        else:
            default = v
    return default


@app.command("serve")
def serve(
    engine: str = typer.Option("pipeline", "--engine", "-e", help="Engines to serve, comma-separated: pipeline, "
                               "closed-book, rag-token, rag-sequence, onegen. Each is the OpenAI model "
                               "'unirag-<engine>'."),
    index: Optional[list[str]] = typer.Option(None, "--index", "-i", help="Index folder of the pipeline and RAG "
                                              "engines (default: the built-in one); ENGINE=FOLDER for one engine "
                                              "(e.g. onegen=FOLDER: OneGen reads its model's own index otherwise)."),
    retriever: str = RetrieverOpt,
    generator: str = typer.Option(DEFAULT_GENERATOR, help="Generator of the pipeline and RAG engines."),
    dtype: Optional[str] = DtypeOpt,
    model: Optional[list[str]] = typer.Option(None, "--model", help="A trained RAG or OneGen model folder; "
                                              "ENGINE=FOLDER for one engine."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Loopback by default; any other address "
                             "needs --api-key."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="UNIRAG_API_KEY", show_envvar=True,
                                          help="Require 'Authorization: Bearer KEY' on every request but /health "
                                          "and /ready (prefer the environment variable: a command line is "
                                          "visible to other users)."),
    max_batch: int = typer.Option(8, min=1, help="Requests of one engine decoded together."),
    max_queue: int = typer.Option(32, min=1, help="Requests that may wait per engine; more get 429."),
    batch_wait_ms: float = typer.Option(10.0, min=0.0, help="How long an idle worker waits for a batch to fill."),
    continuous: bool = typer.Option(True, "--continuous/--no-continuous", help="Let requests join a running "
                                    "batch between decoding steps (pipeline, closed-book and OneGen engines)."),
    hops: int = typer.Option(1, min=1, help="Retrievals per question of the pipeline engine (multi-hop: the reader "
                             "writes follow-up queries); a request's 'hops' overrides it."),
    max_hops: int = typer.Option(4, min=1, help="Most hops a request may ask for (422 above)."),
    hop_mode: str = HopModeOpt,
    plan_examples: Optional[Path] = PlanExamplesOpt,
    max_body_bytes: int = typer.Option(1_000_000, min=1, help="Largest request body (413 above)."),
    max_question_chars: int = typer.Option(4000, min=1, help="Longest question / query / embedding input (422 above)."),
    max_k: int = typer.Option(20, min=1, help="Most passages a request may ask for (422 above)."),
    max_tokens: int = typer.Option(1024, min=1, help="Most tokens a request may generate (422 above)."),
    cors: Optional[list[str]] = typer.Option(None, "--cors", help="Allow browser pages of this origin "
                                             "(repeatable, e.g. https://example.org); CORS is off without it."),
    timeout: float = typer.Option(300.0, "--timeout", min=0.001, help="Seconds a request may wait and run (504 after)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the OpenAI-compatible API (/v1/chat/completions, /v1/embeddings, /v1/models), /search, /ask,
    /index/swap, /info, /metrics, /health and /ready (docs/server.md). Options are checked first; the
    models then load in the background while the server already answers /health (/ready: 503 until
    loaded)."""
    import uvicorn

    from unirag.retrieval.loader import check_retriever_kind
    from unirag.serve import ServeConfig, create_app

    check_retriever_kind(retriever, "--retriever")
    engines = [e.strip() for e in engine.split(",") if e.strip()]
    per: dict[str, dict[str, str]] = {}
    cfg = ServeConfig(host=host, port=port, engines=engines, retriever=retriever, generator=generator,
                      dtype=dtype, api_key=api_key, max_batch=max_batch, max_queue=max_queue, batch_wait_ms=batch_wait_ms,
                      continuous=continuous, hops=hops, max_hops=max_hops, hop_mode=hop_mode,
                      plan_examples=str(plan_examples) if plan_examples else None,
                      max_body_bytes=max_body_bytes, max_question_chars=max_question_chars, max_k=max_k,
                      max_tokens=max_tokens, cors=list(cors or []), request_timeout_s=timeout)
    cfg.validate()
    cfg.index = _per_engine(list(index or []), "--index", cfg.engines, per, "index")
    cfg.model = _per_engine(list(model or []), "--model", cfg.engines, per, "model")
    cfg.per_engine = per
    for name in cfg.engines:  # every engine's names and paths, before anything loads
        cfg.load_config(name)
    uvicorn.run(create_app(None, cfg), host=cfg.host, port=cfg.port, log_level=log_level)
