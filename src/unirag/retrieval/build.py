"""Build an index folder from passages: doc store, dense FAISS index, BM25, one atomic write."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from unirag.config.base import ConfigBase, ConfigError
from unirag.config.fs import atomic_dir
from unirag.corpus.passage import Passage
from unirag.corpus.store import DocStore
from unirag.index.folder import IndexFolder
from unirag.index.manifest import Manifest
from unirag.index.vector import Index
from unirag.models.encoder import DEFAULT_BATCH_TOKENS
from unirag.models.registry import DEFAULT_ENCODER
from unirag.retrieval.bm25 import build_bm25

CHUNK = 50_000  # passages embedded and added per step, so 21M never sit in memory at once
ENCODER_DTYPES = ("float32", "int8")
# The encoder path of new indexes when none is asked for. int8 (dynamic quantisation of the Linear
# layers) would be about 1.6x faster here, but on FanOutQA dev it loses more recall@5 than the bar
# allows (0.005): see docs/first-run.md.
DEFAULT_ENCODER_DTYPE = "float32"


@dataclass
class BuildConfig(ConfigBase):
    """How :func:`build_index` embeds: ``threads`` (embedding and FAISS threads while building; 0 = every
    core this process may use), ``encoder_dtype`` (``float32`` or ``int8``, recorded in the manifest
    so queries take the same path), ``batch_size`` (texts per batch at most) and ``batch_tokens``
    (padded tokens per batch at most, for an encoder given by name; 0: ``batch_size`` only)."""

    threads: int = 0
    encoder_dtype: str = DEFAULT_ENCODER_DTYPE
    batch_size: int = 64
    batch_tokens: int = DEFAULT_BATCH_TOKENS

    def validate(self) -> BuildConfig:
        if self.threads < 0:
            raise ConfigError(f"threads: must be 0 (every core) or more, got {self.threads}")
        if self.encoder_dtype not in ENCODER_DTYPES:
            raise ConfigError(f"encoder_dtype: must be one of {', '.join(ENCODER_DTYPES)}, got {self.encoder_dtype!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.batch_tokens < 0:
            raise ConfigError(f"batch_tokens: must be 0 (no budget) or more, got {self.batch_tokens}")
        return self


def _faiss_threads(factory: str, deterministic: bool):
    """HNSW graphs built by several threads differ run to run: build them on one thread."""
    import contextlib

    import faiss

    @contextlib.contextmanager
    def ctx():
        if deterministic and "HNSW" in factory.upper():
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                yield
            finally:
                faiss.omp_set_num_threads(before)
        else:
            yield

    return ctx()


def encoder_info(encoder) -> dict:
    """What a manifest records about an embedding function (its ``info()``, else its settings)."""
    return (encoder.info() if hasattr(encoder, "info") else
            {"pooling": encoder.pooling, "normalize": encoder.normalize, "max_length": encoder.max_length})


def build_index(
    passages: Iterable[Passage],
    out: str | os.PathLike,
    encoder=DEFAULT_ENCODER,
    factory: str = "Flat",
    dense: bool = True,
    bm25: bool = True,
    batch_size: int = 64,
    sort_by_length: bool = True,
    progress: bool = True,
    deterministic: bool = True,
    registry: dict | None = None,
    lock: bool = True,
    ray=None,
    threads: int | None = None,
    encoder_dtype: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    config: BuildConfig | None = None,
    batch_tokens: int | None = None,
) -> Path:
    """Write an index folder at ``out``: ``docs/`` (doc store), ``index.faiss`` (dense, embedded
    with ``encoder`` in length-sorted batches), ``bm25/`` and ``manifest.json`` with checksums.

    ``encoder`` is a name (loaded as :class:`~unirag.models.Encoder`) or any embedding function
    with ``name``, ``dim`` and ``encode(texts, batch_size=, sort_by_length=, bar=)`` (and
    optionally ``info()`` for the manifest), e.g. a OneGen model's
    :class:`~unirag.onegen.docindex.OneGenEncoder`.

    ``ray``: embed on a Ray cluster instead of in this process (``True``: ``$RAY_ADDRESS`` or a new
    local cluster; an address; or a dict / :class:`~unirag.distributed.embed.RayEmbedOptions` with
    ``concurrency``, ``batch_size``, ``num_cpus`` per actor). The folder is the same either way.

    The folder appears only when complete; an existing one is replaced only on success. Writers
    of one folder are serialised by the lock :func:`unirag.retrieval.update.writer_lock` takes
    (``lock=False``: the caller holds it). ``registry``: a document registry written as
    ``sources.json`` (:mod:`unirag.index.registry`).

    ``threads``: embedding threads (ONNX Runtime's session for a float32 encoder given by name, else
    torch's, which also sets FAISS's: one OpenMP runtime), restored afterwards
    (``None`` / 0: every core this process may use). ``encoder_dtype``: ``"float32"`` or ``"int8"``
    for an encoder given by name (the manifest records the encoder as ``NAME+int8``, so queries are
    embedded by the same path). ``batch_tokens``: padded tokens per batch at most for an encoder
    given by name (``None``: :data:`~unirag.models.encoder.DEFAULT_BATCH_TOKENS`; 0: ``batch_size``
    texts only). ``config``: a :class:`BuildConfig` holding these (and ``batch_size``) instead.
    ``progress``: show what is being built, passages done / total, passages/s and the time left (a
    rich bar on a terminal, plain lines otherwise); ``on_progress(done, total)`` is called after
    every batch either way.
    """
    import contextlib

    from unirag.models.encoder import torch_threads
    from unirag.retrieval.update import remove_stale_versions, writer_lock

    if config is not None:
        config.validate()
        threads = config.threads if threads is None else threads
        encoder_dtype = encoder_dtype or config.encoder_dtype
        batch_size = config.batch_size
        batch_tokens = config.batch_tokens if batch_tokens is None else batch_tokens
    if batch_tokens is not None and batch_tokens < 0:
        raise ConfigError(f"build_index: batch_tokens must be 0 (no budget) or more, got {batch_tokens}")
    if threads is not None and threads < 0:
        raise ConfigError(f"build_index: threads must be 0 (every core) or more, got {threads}")
    if encoder_dtype is not None and encoder_dtype not in ENCODER_DTYPES:
        raise ConfigError(f"build_index: encoder_dtype must be one of {', '.join(ENCODER_DTYPES)}, "
                          f"got {encoder_dtype!r}")
    if encoder_dtype == "int8" and not isinstance(encoder, str) and getattr(encoder, "dtype", None) != "int8":
        raise ConfigError(f"build_index: encoder_dtype={encoder_dtype!r} but the encoder given is "
                          "not: pass its name, or load it with Encoder.from_pretrained(..., dtype='int8')")

    if not dense and not bm25:
        from unirag.config.errors import UsageError

        raise UsageError("build_index: nothing to build: enable dense and/or bm25")
    if ray:  # options checked before anything is written
        from unirag.distributed.embed import RayEmbedOptions

        ray = RayEmbedOptions.coerce(ray)
    out = Path(out)
    with writer_lock(out) if lock else contextlib.nullcontext():
        remove_stale_versions(out)
        with atomic_dir(out) as tmp:
            layout = IndexFolder(tmp)
            store = DocStore.build(passages, layout.docs_dir, progress=False)
            extra = {"kinds": (["dense"] if dense else []) + (["bm25"] if bm25 else [])}
            if bm25:
                build_bm25((p.contents for p in store), layout.bm25_dir)
            if dense:
                if isinstance(encoder, str) and encoder_dtype:
                    from unirag.models.encoder import INT8_SUFFIX, split_dtype

                    base = split_dtype(encoder)[0]
                    encoder = base + INT8_SUFFIX if encoder_dtype == "int8" else base
                encoder_spec = encoder  # what Ray actors load: the name, or the embedding function itself
                if isinstance(encoder, str):  # float32: on ONNX Runtime where it can be (unirag.models.onnx_encoder)
                    from unirag.models.onnx_encoder import corpus_encoder

                    encoder = corpus_encoder(encoder, DEFAULT_BATCH_TOKENS if batch_tokens is None else batch_tokens,
                                             threads=int(threads) if threads else None)
                ort_threads = getattr(encoder, "threads", None) if hasattr(encoder, "session") else None
                if ort_threads is not None:  # ONNX Runtime's threads are the session's, not torch's
                    from unirag.models.encoder import default_threads

                    encoder.threads = int(threads) if threads else default_threads()
                index = Index(encoder.dim, factory, "ip")
                m = index.manifest
                m.encoder = encoder.name
                m.encoder_info = encoder_info(encoder)
                bar = None
                if progress or on_progress is not None:
                    from unirag.progress import Progress

                    bar = Progress(len(store), "embedding corpus", unit="passages",
                                   display="auto" if progress else "none", on_progress=on_progress)
                with torch_threads(threads):
                    if ray:
                        from unirag.distributed.embed import embed_store

                        chunks = embed_store(layout.docs_dir, encoder_spec, len(store), ray, CHUNK,
                                             batch_size, sort_by_length, bar)
                    else:
                        chunks = (encoder.encode([store[r].contents for r in range(start, min(start + CHUNK, len(store)))],
                                                 batch_size=batch_size, sort_by_length=sort_by_length, bar=bar)
                                  for start in range(0, len(store), CHUNK))
                    for vecs in chunks:  # embedded outside the FAISS context: it may hold one thread
                        with _faiss_threads(factory, deterministic):
                            index.add(vecs)
                if bar is not None:
                    bar.close()
                if ort_threads is not None:
                    encoder.threads = ort_threads  # restored, as torch's are
            else:
                index = None
                m = Manifest(dim=0, factory="", metric="", count=len(store))
            if registry is not None:
                from unirag.index.registry import write_registry

                write_registry(tmp, registry)
            finish_folder(tmp, store, index, m, extra)
    return out


def finish_folder(tmp: Path, store: DocStore, index: Index | None, manifest: Manifest, extra: dict) -> None:
    """Record the corpus in ``manifest``, close ``store`` and write ``index.faiss`` (when dense) and
    ``manifest.json`` with the checksum of every file of the folder being written (``tmp``)."""
    manifest.corpus_sha256, manifest.corpus_count, manifest.extra = store.checksum, len(store), extra
    store.close()
    if index is not None:
        index.write_into(tmp)
    else:
        from unirag.config.fs import sha256_file

        manifest.count = manifest.corpus_count
        manifest.files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                          for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest.save(IndexFolder(tmp).manifest_file)


def default_index_dir(encoder: str = DEFAULT_ENCODER, factory: str = "Flat") -> Path:
    """Cache folder of the default index over the packaged Wikipedia summaries."""
    tag = factory.replace(",", "_").lower()
    return IndexFolder.cached(f"wiki-en-{encoder.split('/')[-1].lower()}-{tag}").path


def ensure_default_index(encoder: str = DEFAULT_ENCODER, factory: str = "Flat", progress: bool = True,
                         threads: int | None = None, convert: str | None = None) -> Path:
    """The default index folder, built on first use (2-6 minutes on 2 cores, by CPU) and cached.
    ``threads``: embedding threads (default: :func:`unirag.models.encoder.default_threads`, i.e.
    ``$UNIRAG_THREADS``, else every available core).

    ``convert``: a packaged generator to convert meanwhile, when it is not in the cache yet. Its
    conversion runs on one core (numpy dequantisation) in a child process, so embedding gives up
    one thread until it ends and then takes all of them again."""
    path = default_index_dir(encoder, factory)
    if not IndexFolder(path).exists():
        from unirag.data.wiki import wiki_passages
        from unirag.models.encoder import default_threads

        if progress:
            from rich.console import Console

            Console(stderr=True).print(
                f"[bold]Building the default index[/] over 10,033 Wikipedia summaries into {path} (once)"
            )
        n = int(threads) if threads else default_threads()
        from unirag.models.encoder import INT8_SUFFIX
        from unirag.models.onnx_encoder import corpus_encoder

        # the runtime is chosen (measured once per machine) on every thread, before the conversion takes one
        enc = corpus_encoder(encoder + (INT8_SUFFIX if DEFAULT_ENCODER_DTYPE == "int8" else ""), DEFAULT_BATCH_TOKENS,
                             threads=n)
        child = _convert_in_background(convert, progress) if convert and n >= 2 else None
        on_progress = None
        if child is not None:
            import torch

            def on_progress(done: int, total: int) -> None:  # after every batch, in the embedding thread
                k = n - 1 if child.poll() is None else n
                if hasattr(enc, "session"):
                    enc.threads = k  # the next batch runs on a session of k threads
                else:
                    torch.set_num_threads(k)

        try:
            build_index(wiki_passages(), path, encoder=enc, factory=factory, progress=progress,
                        threads=n - 1 if child is not None else n, on_progress=on_progress)
        finally:
            if child is not None:
                child.wait()  # its result is checked by the caller's resolve_model (converted, or again here)
    return path


def _convert_in_background(name: str, progress: bool):
    """A child process converting packaged generator ``name`` into the cache (``None`` when it is
    there already). It writes the folder atomically, so a reader sees it whole or not at all."""
    import subprocess
    import sys

    from unirag.models.registry import needs_conversion

    if not needs_conversion(name):
        return None
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold]Converting the generator[/] {name} meanwhile (once, one core)")
    code = "import sys; from unirag.models.registry import resolve_model; resolve_model(sys.argv[1], progress=False)"
    env = dict(os.environ, OMP_NUM_THREADS="1", UNIRAG_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code, name], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
