"""``RAG``: the one door over the three engines (retrieve-then-read, classic RAG, OneGen).

    import unirag
    rag = unirag.RAG.load(engine="pipeline")            # or "rag-token", "rag-sequence", "onegen"
    answer = rag.ask("Who painted the Mona Lisa?", unirag.SamplingParams(max_new_tokens=64))
    print(answer.text, [s.title for s in answer.sources])

Every engine takes the same :class:`~unirag.sampling_params.SamplingParams` and returns the same
:class:`~unirag.outputs.Answer`; ``stream`` yields the same events. Engine-specific verbs stay on
``rag.engine`` (e.g. ``rag.engine.model`` is the ``RagModel`` or ``OneGenModel``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unirag.config.base import ConfigBase, ConfigError
from unirag.engine import Engine, UpdatableEngine, hits, make_sources
from unirag.outputs import Answer, Event, Finished, Source
from unirag.models.registry import DEFAULT_GENERATOR, GENERATOR_DTYPES
from unirag.sampling_params import SamplingParams

ENGINES = ("pipeline", "closed-book", "rag-token", "rag-sequence", "onegen")
ALIASES = {"rag": "rag-token", "closed_book": "closed-book"}
RETRIEVERS = ("dense", "bm25", "hybrid")


def engine_name(name: str) -> str:
    """The canonical engine name (``rag`` means ``rag-token``); ``ConfigError`` for an unknown one."""
    key = ALIASES.get(name, name)
    if key not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)} (or 'rag')")
    return key


@dataclass
class LoadConfig(ConfigBase):
    """Everything :meth:`RAG.load` needs to rebuild an engine (round-trips to YAML/JSON).

    ``index``: an index folder (default: the built-in Wikipedia index for the pipeline and RAG,
    the OneGen model's own index of it for OneGen). ``generator``: the reader of the pipeline and
    RAG engines (alias, folder or hub id; ``onegen`` reads with the LM of the OneGen model folder
    ``model`` when it is one, else of the default OneGen model).
    ``retriever``: ``dense``, ``bm25`` or ``hybrid`` (pipeline). ``model``: a trained RAG model
    folder (``RagModel.save_pretrained``) or OneGen model folder. ``k``: passages per question
    (pipeline 3, RAG 4, OneGen 1 per query token; multi-hop pipeline: per hop). ``decoding`` /
    ``num_beams``: RAG decoders. ``hops`` (pipeline): retrievals per question, 1 = single-shot,
    more = the reader writes a follow-up query between them; ``max_passages``: passages read in all
    (``None``: hops x k); ``max_prompt_tokens``: tokens of the final prompt (``None``: no limit);
    ``hop_mode``: ``plan`` (the reader lists the articles needed once, from worked examples in
    ``plan_examples``, a JSONL file, ``None``: the packaged ones; :mod:`unirag.pipeline.plan`;
    each name is a hop, so give ``hops`` room for them) or ``followup`` (a follow-up query after
    each hop). ``dtype``: weights of the pipeline's generator, ``float32`` or ``bfloat16`` (``None``: the
    model's measured default on this CPU, :func:`unirag.models.registry.default_dtype`), or of the OneGen
    model while it answers (``None``: ``float32``; the index it builds on first use is embedded in ``float32``)."""

    engine: str = "pipeline"
    index: str | None = None
    generator: str | None = DEFAULT_GENERATOR
    retriever: str = "dense"
    model: str | None = None
    k: int | None = None
    decoding: str | None = None
    num_beams: int = 4
    verify: bool = True
    encoder: str | None = None
    hops: int = 1
    max_passages: int | None = None
    max_prompt_tokens: int | None = None
    dtype: str | None = None
    hop_mode: str = "plan"
    plan_examples: str | None = None

    def validate(self) -> LoadConfig:
        """Check names, numbers and paths (cheap; nothing is loaded). Raises ``ConfigError`` /
        ``IndexFormatError`` naming the option."""
        self.engine = engine_name(self.engine)
        if self.generator is None and self.engine != "pipeline":
            raise ConfigError(f"engine {self.engine!r} needs a generator")
        from unirag.retrieval.loader import check_retriever_kind

        check_retriever_kind(self.retriever, "retriever")
        if self.k is not None and self.k < (0 if self.engine == "closed-book" else 1):
            raise ConfigError(f"k = {self.k}: must be >= 1")
        if self.num_beams < 1:
            raise ConfigError(f"num_beams = {self.num_beams}: must be >= 1")
        if self.hops < 1:
            raise ConfigError(f"hops = {self.hops}: must be >= 1 (1 = single-shot)")
        if self.hops > 1 and self.engine != "pipeline":
            raise ConfigError(f"hops = {self.hops}: multi-hop retrieval is a pipeline option, not {self.engine!r}'s")
        from unirag.pipeline.plan import HOP_MODES, read_examples

        if self.hop_mode not in HOP_MODES:
            raise ConfigError(f"hop_mode = {self.hop_mode!r}: must be one of {', '.join(HOP_MODES)}")
        if self.plan_examples is not None:
            read_examples(self.plan_examples)  # a bad file is named now, with its line
        for name in ("max_passages", "max_prompt_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)}: must be >= 1")
        if self.dtype is not None and self.dtype not in GENERATOR_DTYPES:
            raise ConfigError(f"dtype = {self.dtype!r}: must be one of {', '.join(GENERATOR_DTYPES)}")
        if self.index is not None:
            check_index(self.index)  # a clear error now, not after loading models
        if self.model is not None and not Path(self.model).is_dir():
            from unirag.models.registry import ModelNotFoundError

            raise ModelNotFoundError(f"{self.model}: no such model folder")
        from unirag.onegen.config import CONFIG_FILE as ONEGEN_CONFIG

        if self.generator == "onegen" and self.model and (Path(self.model) / ONEGEN_CONFIG).is_file():
            self.generator = self.model  # the same LM as the OneGen model given
        if self.engine.startswith("rag-") and self.decoding is not None:
            from unirag.rag.engine import DECODINGS

            variant = self.engine.split("-")[1]
            if self.decoding not in DECODINGS[variant]:
                raise ConfigError(f"decoding {self.decoding!r} is not a {self.engine} decoding; use one of "
                                  f"{list(DECODINGS[variant])}")
        return self


def check_index(index: str | os.PathLike) -> None:
    """Read the manifest of an index folder, or the ``shards.json`` of a shard set (a folder or a
    ``ray://`` URI; its actors start when the engine loads); clear errors, nothing loaded."""
    index_encoder(index)


def index_encoder(index: str | os.PathLike) -> str:
    """The encoder named by an index folder's manifest or a shard set's ``shards.json``."""
    from unirag.distributed.sharded import is_sharded

    if is_sharded(index):
        from unirag.distributed.sharded import parse_ray_uri
        from unirag.distributed.shards import read_shard_set

        s = os.fspath(index)
        return read_shard_set(parse_ray_uri(s)[1] if s.startswith("ray:") else s)["encoder"]
    from unirag.index.folder import IndexFolder

    return IndexFolder(index).read_manifest().encoder


class RAG:
    """One engine behind one set of verbs: ``ask``, ``ask_batch``, ``stream``, ``search``,
    ``swap_index``, ``add_documents``, ``delete_documents``, ``info``. Build with :meth:`load`;
    ``params`` are the default :class:`SamplingParams` of calls that pass none."""

    def __init__(self, engine: Engine, params: SamplingParams | None = None, config: LoadConfig | None = None):
        self.engine = engine
        self.params = params or SamplingParams(max_new_tokens=96)
        self.config = config

    @classmethod
    def load(cls, index: str | os.PathLike | None = None, engine: str = "pipeline", *,
             generator: str = DEFAULT_GENERATOR, retriever: str = "dense", model: str | os.PathLike | None = None,
             k: int | None = None, decoding: str | None = None, num_beams: int = 4, verify: bool = True,
             params: SamplingParams | None = None, progress: bool = True, hops: int = 1,
             max_passages: int | None = None, max_prompt_tokens: int | None = None, dtype: str | None = None,
             hop_mode: str = "plan", plan_examples: str | os.PathLike | None = None) -> RAG:
        """Load an engine over an index folder. Names and paths are checked before anything loads.

        ``hops`` > 1 (pipeline): multi-hop retrieval, ``k`` passages per hop, at most
        ``max_passages`` (default hops x k) and ``max_prompt_tokens`` in the final prompt;
        ``hop_mode="plan"``: the reader plans the searches once (``plan_examples``: its worked examples).

        ``dtype``: the weights of the pipeline's and closed-book's generator, ``float32`` or
        ``bfloat16`` (``None``: the model's measured default on this CPU), or of the OneGen model while
        it answers (``None``: ``float32``; bfloat16 only pays where the CPU multiplies it natively).

        ``progress`` reports first-run builds (the default index, the OneGen index) on stderr."""
        cfg = LoadConfig(engine, None if index is None else str(index), generator, retriever,
                         None if model is None else str(model), k, decoding, num_beams, verify,
                         hops=hops, max_passages=max_passages, max_prompt_tokens=max_prompt_tokens, dtype=dtype,
                         hop_mode=hop_mode, plan_examples=None if plan_examples is None else str(plan_examples))
        return cls.from_config(cfg, params=params, progress=progress)

    @classmethod
    def from_config(cls, cfg: LoadConfig, params: SamplingParams | None = None, progress: bool = True) -> RAG:
        """Load the engine a :class:`LoadConfig` describes."""
        cfg.validate()
        if cfg.engine in ("pipeline", "closed-book"):
            eng = _pipeline(cfg, progress)
        elif cfg.engine.startswith("rag-"):
            eng = _rag(cfg, progress)
        else:
            eng = _onegen(cfg, progress)
        return cls(eng, params, cfg)

    # --- the verbs ---------------------------------------------------------------------------
    def ask(self, question: str, params: SamplingParams | None = None) -> Answer:
        """The answer to one question, with its sources."""
        return self.ask_batch([question], params)[0]

    def ask_batch(self, questions: Sequence[str], params: SamplingParams | None = None,
                  batch_size: int = 8) -> list[Answer]:
        """Answers in question order; up to ``batch_size`` questions decode together."""
        params = _check(params or self.params)
        if batch_size < 1:
            raise ConfigError(f"batch_size = {batch_size}: must be >= 1")
        qs = [_question(q) for q in questions]
        out: list[Answer] = []
        for s in range(0, len(qs), batch_size):
            out += self.engine.ask_batch(qs[s : s + batch_size], params)
        return out

    def stream(self, question: str, params: SamplingParams | None = None) -> Iterator[Event]:
        """Events as they happen: :class:`~unirag.outputs.TextDelta`,
        :class:`~unirag.outputs.RetrievalEvent`, then :class:`~unirag.outputs.Finished`."""
        return self.engine.stream(_question(question), _check(params or self.params))

    def stream_batch(self, questions: Sequence[str], params: SamplingParams | Sequence[SamplingParams] | None = None,
                     cancelled: Any = None, admit: Any = None) -> Iterator[tuple[int, Event]]:
        """``(question index, event)`` pairs of several questions decoded together (a server batches
        concurrent requests this way): ``params`` one for all or one per question (each with its
        own seed); ``cancelled(i)``, asked between decoding steps, ends question ``i`` early
        (finish reason ``cancelled``) while the others go on. ``admit()``, asked between steps,
        returns new ``(question, params)`` pairs that join the running batch (continuous batching;
        only params that :meth:`admits` accepts), numbered on after the questions before them."""
        qs = [_question(q) for q in questions]
        per = [params or self.params] * len(qs) if not isinstance(params, (list, tuple)) else list(params)
        if len(per) != len(qs):
            raise ConfigError(f"{len(per)} SamplingParams for {len(qs)} questions")
        checked = None
        if admit is not None:
            def checked() -> list[tuple[str, SamplingParams]]:
                return [(_question(q), _check(p or self.params)) for q, p in admit()]
        return self.engine.stream_batch(qs, [_check(p) for p in per], cancelled, checked)

    def admits(self, params: SamplingParams | None = None) -> bool:
        """Whether a question with ``params`` can join a running :meth:`stream_batch` (the engine
        decodes in the KV-cache loop and the request needs no work before it, such as multi-hop)."""
        return bool(getattr(self.engine, "admits", lambda p: False)(params or self.params))

    def stream_answer(self, question: str, params: SamplingParams | None = None) -> Answer:
        """Drain :meth:`stream` and return its final answer."""
        for ev in self.stream(question, params):
            if isinstance(ev, Finished):
                return ev.answer
        raise RuntimeError("the stream ended without an answer")

    def search(self, query: str | Sequence[str], k: int = 5) -> list[Source] | list[list[Source]]:
        """Top-``k`` passages as numbered :class:`Source` objects (one list per query for a list)."""
        if k < 1:
            raise ConfigError(f"k = {k}: must be >= 1")
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        res = self.engine.search([_question(q) for q in queries], k)
        out = [make_sources(*hits(res, i)) for i in range(len(queries))]
        return out[0] if single else out

    def swap_index(self, folder: str | os.PathLike) -> None:
        """Answer from another index folder from now on (same embedding function, no reload)."""
        check_index(folder)
        self.engine.swap_index(str(folder))

    def add_documents(self, passages: Iterable[Any]) -> dict[str, Any]:
        """Add passages to the engine's index folder (``Passage`` objects or dicts with ``id`` and
        ``text``, optional ``title``, other keys kept as metadata); a passage whose id the index
        holds replaces it. Only new and changed passages are embedded. The next search sees the
        whole batch; a search under way finishes on the old version. Returns the counts:
        ``added``, ``replaced``, ``deleted``, ``embedded``, ``kept``, ``passages`` (new total)."""
        from unirag.retrieval.update import as_passage

        single = isinstance(passages, dict) or hasattr(passages, "contents")  # one Passage or dict
        batch = [as_passage(p) for p in ([passages] if single else passages)]
        return self._updatable().add_documents(batch)

    def delete_documents(self, ids: str | Iterable[str]) -> dict[str, Any]:
        """Remove passages by id from the engine's index folder; their text is in no file of the
        new version. An unknown id raises ``UnknownPassageError`` and nothing changes."""
        batch = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        return self._updatable().delete_documents(batch)

    def add_files(self, paths: str | os.PathLike | Sequence[str | os.PathLike], **options: Any) -> Any:
        """Add documents (PDF, HTML, Word, Markdown, text files or folders of them) to the engine's
        index folder: new files are indexed, changed ones re-read, only changed passages embedded;
        the next search sees the new version. ``options``: those of
        :func:`unirag.retrieval.ingest.add_files`. Returns its :class:`IngestResult` (failed files
        are listed there with their reason; the others are indexed)."""
        from unirag.retrieval.ingest import add_files

        return self._ingest(add_files, paths, **options)

    def sync(self, folder: str | os.PathLike, **options: Any) -> Any:
        """Make the engine's index folder mirror ``folder`` (added, changed and deleted files; see
        :func:`unirag.retrieval.ingest.sync_folder`) and search the new version from now on."""
        from unirag.retrieval.ingest import sync_folder

        return self._ingest(sync_folder, folder, **options)

    def remove_files(self, ids: str | Iterable[str]) -> Any:
        """Remove documents from the engine's index folder by document id, source path, folder
        prefix (``notes/``) or passage id (see :func:`unirag.retrieval.ingest.delete_documents`):
        their passages leave the dense index, BM25 and the doc store; the next search sees the new
        version. Returns the :class:`IngestResult`."""
        from unirag.retrieval.ingest import delete_documents

        batch = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        return self._ingest(lambda index, arg, encoder: delete_documents(index, arg, encoder=encoder), batch)

    def documents(self) -> list[dict[str, Any]]:
        """Every document of the engine's index folder with its status, reason, passage count and
        hash (``unirag index docs``; :func:`unirag.retrieval.ingest.list_documents`)."""
        from unirag.retrieval.ingest import list_documents

        index = self.info().get("index") or ""
        if not index:
            raise ConfigError(f"engine {self.engine.name!r} has no index folder")
        return list_documents(index)

    def _ingest(self, fn: Any, arg: Any, **options: Any) -> Any:
        eng = self._updatable()
        index = self.info().get("index") or ""
        if not index:
            raise ConfigError(f"engine {self.engine.name!r} has no index folder to update")
        encoder = options.pop("encoder", None)
        if encoder is None and hasattr(eng, "_dense_encoder"):
            encoder = eng._dense_encoder()  # the loaded one: no second copy
        res = fn(index, arg, encoder, **options)
        if res.written:
            self.engine.swap_index(index)
        return res

    def _updatable(self) -> UpdatableEngine:
        if not isinstance(self.engine, UpdatableEngine):
            raise ConfigError(f"engine {self.engine.name!r} has no index to update")
        return self.engine

    def info(self) -> dict[str, Any]:
        """The engine's parts: models, index folder, passage count."""
        return self.engine.info()

    def __repr__(self) -> str:
        return f"RAG({self.engine.name}, {self.info().get('index', '')!r})"


def _check(params: SamplingParams) -> SamplingParams:
    if not isinstance(params, SamplingParams):
        raise ConfigError(f"params must be unirag.SamplingParams, not {type(params).__name__}")
    return params.validate()


def _question(q: Any) -> str:
    if not isinstance(q, str) or not q.strip():
        raise ConfigError(f"a question must be a non-empty string, got {q!r}")
    return q


def _default_index(progress: bool, generator: str | None = None) -> Path:
    """The default index (built on first use; a packaged ``generator`` not converted yet converts
    meanwhile)."""
    from unirag.retrieval.build import ensure_default_index

    return ensure_default_index(progress=progress, convert=generator)


def load_generator(name: str, dtype: str | None = None) -> Any:
    """A :class:`~unirag.models.Generator` by alias, folder or hub id, its weights in ``dtype``
    (``None``: the model's measured default); ``onegen`` (or a OneGen model folder) reads with that
    model's fine-tuned LM, so baselines can share the OneGen model's LM."""
    from unirag.models.generator import Generator
    from unirag.onegen.config import CONFIG_FILE as ONEGEN_CONFIG

    folder = None
    if name == "onegen":
        from unirag.onegen.docindex import resolve_onegen_dir

        folder = resolve_onegen_dir(None)
    elif (Path(name) / ONEGEN_CONFIG).is_file():
        folder = Path(name)
    if folder is None:
        return Generator.from_pretrained(name, dtype=dtype)
    from unirag.onegen.model import OneGenModel

    og = OneGenModel.from_pretrained(folder, merge=True)
    if dtype is not None:
        import torch

        og.lm.to(getattr(torch, dtype))
    return Generator(og.lm, og.tokenizer, name=f"onegen:{folder.name}", banned_token_id=og.token_id("query"))


def _pipeline(cfg: LoadConfig, progress: bool) -> Any:
    from unirag.pipeline.engine import PipelineConfig, PipelineEngine
    from unirag.retrieval.loader import load_retriever

    if cfg.engine == "closed-book":
        return _closed_book(PipelineEngine(None, load_generator(cfg.generator, cfg.dtype), PipelineConfig(k=0)))
    folder = Path(cfg.index) if cfg.index else _default_index(progress, cfg.generator)
    retriever = load_retriever(folder, cfg.retriever, encoder=cfg.encoder, verify=cfg.verify)
    return PipelineEngine(retriever, load_generator(cfg.generator, cfg.dtype) if cfg.generator else None,
                          PipelineConfig(k=cfg.k if cfg.k is not None else 3, hops=cfg.hops,
                                         max_passages=cfg.max_passages, max_prompt_tokens=cfg.max_prompt_tokens,
                                         hop_mode=cfg.hop_mode, plan_examples=cfg.plan_examples),
                          kind=cfg.retriever)


def _closed_book(engine: Any) -> Any:
    engine.name = "closed-book"
    return engine


def _rag(cfg: LoadConfig, progress: bool) -> Any:
    from unirag.rag.config import RagConfig
    from unirag.rag.engine import RagEngine
    from unirag.rag.model import RagModel

    variant = cfg.engine.split("-")[1]
    folder = Path(cfg.index) if cfg.index else _default_index(progress)
    if cfg.model:
        model = RagModel.from_pretrained(cfg.model, index=folder)
    else:
        from unirag.distributed.sharded import is_sharded
        from unirag.index.folder import IndexFolder

        encoder = index_encoder(folder) or RagConfig.question_encoder  # queries as the index's documents
        # cosine scores of a normalising encoder lie in [-1, 1]: scaled, so that p(z|x) is not near-uniform
        info = {} if is_sharded(folder) else IndexFolder(folder).read_manifest().encoder_info
        scale = 20.0 if info.get("normalize", True) else 1.0
        model = RagModel.from_config(RagConfig(variant=variant, question_encoder=encoder, generator=cfg.generator,
                                               doc_score_scale=scale), index=folder)
    if cfg.k is not None:
        model.config.n_docs = cfg.k
    return RagEngine(model, variant, cfg.decoding, cfg.num_beams)


def _onegen(cfg: LoadConfig, progress: bool) -> Any:
    from unirag.onegen.docindex import ensure_onegen_index, model_name, open_onegen_index, resolve_onegen_dir
    from unirag.onegen.engine import OneGenEngine
    from unirag.onegen.model import OneGenModel

    folder = resolve_onegen_dir(cfg.model)
    og = OneGenModel.from_pretrained(folder, merge=True)
    if cfg.index:
        retriever = open_onegen_index(cfg.index, og, verify=cfg.verify)
    else:
        from unirag.onegen.docindex import onegen_index_folder

        if progress and not onegen_index_folder(folder).exists():
            import sys

            print(f"OneGen index of the Wikipedia corpus for {folder.name} (built once: every passage is "
                  "embedded by the model)", file=sys.stderr)
        retriever = open_onegen_index(ensure_onegen_index(og, folder, progress=progress), og,
                                      model_name=model_name(folder), verify=cfg.verify)
    if cfg.dtype is not None:  # after the index: documents are embedded in float32 either way
        import torch

        og.lm.to(getattr(torch, cfg.dtype))
    return OneGenEngine(og, retriever, folder)
