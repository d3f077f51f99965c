"""Distributed corpus embedding on Ray Data: a doc store read as a Ray dataset, embedded by
``map_batches`` over a pool of actors that each load the encoder once, returned in row order.

``build_index(..., ray=...)`` (and ``unirag index build --ray``) embed through :func:`embed_store` and
write the same folder as the single-process build: same doc store, same ids and row order, vectors
equal to float tolerance, the manifest equal apart from timing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class RayEmbedOptions:
    """How the corpus is embedded on the cluster.

    ``address``: ``True`` (``$RAY_ADDRESS`` or a new local cluster) or a cluster address.
    ``concurrency``: encoder actors in the pool (each loads the encoder once).
    ``batch_size``: passages handed to an actor per call (it embeds them in length-sorted
    sub-batches of the build's ``batch_size``). ``num_cpus`` / ``num_gpus``: per actor.
    ``read_cpus``: CPUs of each task that reads the corpus file. The cluster needs
    ``concurrency * num_cpus + read_cpus`` CPUs (checked before anything runs: the actors hold their
    CPUs for the whole run, and a reader left without one would wait forever).
    ``local_cpus``: CPUs of a local cluster started here (default: the machine's, or what the pool
    needs if more)."""

    address: str | bool = True
    concurrency: int = 1
    batch_size: int = 1024
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    read_cpus: float = 0.25
    local_cpus: int | None = None

    @classmethod
    def coerce(cls, ray: Any, **overrides: Any) -> RayEmbedOptions:
        """Options from ``build_index``'s ``ray=`` (``True``, an address, a dict or options)."""
        if isinstance(ray, cls):
            opts = ray
        elif isinstance(ray, dict):
            unknown = set(ray) - set(cls.__dataclass_fields__)
            if unknown:
                from unirag.config.errors import UsageError

                raise UsageError(f"ray options: unknown {sorted(unknown)} (known: {sorted(cls.__dataclass_fields__)})")
            opts = cls(**ray)
        elif ray is True or isinstance(ray, str):
            opts = cls(address=ray or True)
        else:
            raise TypeError(f"ray=: expected True, an address, a dict or RayEmbedOptions, got {ray!r}")
        for key, value in overrides.items():
            if value is not None:
                setattr(opts, key, value)
        from unirag.config.errors import UsageError

        for name in ("concurrency", "batch_size", "num_cpus", "read_cpus"):
            if not getattr(opts, name) > 0:
                raise UsageError(f"ray option {name} = {getattr(opts, name)}: must be positive")
        if opts.num_gpus < 0:
            raise UsageError(f"ray option num_gpus = {opts.num_gpus}: must be 0 or more")
        return opts

    @property
    def cpus_needed(self) -> float:
        """CPUs the pool and one reader hold at once."""
        return self.concurrency * self.num_cpus + self.read_cpus


class EmbedActor:
    """One member of the actor pool: loads the encoder once, embeds batches of doc-store rows."""

    def __init__(self, encoder: Any, batch_size: int, sort_by_length: bool, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        if isinstance(encoder, str):
            from unirag.models.encoder import Encoder

            encoder = Encoder.from_pretrained(encoder)
        self.encoder = encoder
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        titles, texts = batch["title"], batch["text"]
        contents = [f"{t}. {x}" if t else str(x) for t, x in zip(titles, texts)]  # Passage.contents
        vecs = self.encoder.encode(contents, batch_size=self.batch_size, sort_by_length=self.sort_by_length)
        return {"vector": np.asarray(vecs, dtype=np.float32)}




def corpus_dataset(docs_dir: str | os.PathLike, read_cpus: float = 0.25):
    """A doc store's passages (``docs.jsonl``, row order) as a Ray dataset of ``id``, ``title``, ``text``
    (metadata fields are not read)."""
    import pyarrow as pa
    import pyarrow.json as pajson
    import ray.data

    schema = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])
    parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return ray.data.read_json(str(Path(docs_dir) / "docs.jsonl"), parse_options=parse, num_cpus=read_cpus)


def _free_cpus(ray, needed: float, wait_s: float = 30.0) -> float:
    """Free CPUs of the cluster, waiting up to ``wait_s`` for actors of an earlier run to release
    theirs (immediately when the whole cluster has too few)."""
    import time

    if ray.cluster_resources().get("CPU", 0.0) < needed:
        return ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + wait_s
    while True:
        have = ray.available_resources().get("CPU", 0.0)
        if have >= needed or time.monotonic() > deadline:
            return have
        time.sleep(0.2)


def embed_store(docs_dir: str | os.PathLike, encoder: Any, count: int, options: RayEmbedOptions,
                chunk: int, batch_size: int = 64, sort_by_length: bool = True, bar: Any = None,
                progress: bool = False) -> Iterator[np.ndarray]:
    """Vectors of the doc store at ``docs_dir`` (``count`` passages), yielded in row order in chunks of
    ``chunk`` rows (the last may be shorter), so an index trains and adds exactly as in the
    single-process build. ``encoder``: a name (each actor loads it) or an embedding function (shipped
    to each actor once). The folder must be readable by the workers (local or a shared filesystem)."""
    from unirag.distributed.cluster import connect, disconnect, require_ray

    ray = require_ray()
    import math

    local = options.local_cpus or max(os.cpu_count() or 1, math.ceil(options.cpus_needed))
    started = connect(options.address, local)
    ctx = saved = None
    try:
        have = _free_cpus(ray, options.cpus_needed)
        if have < options.cpus_needed:
            from unirag.config.errors import UsageError

            raise UsageError(f"ray: the cluster has {have:g} free CPUs but {options.concurrency} encoder actors of "
                             f"{options.num_cpus:g} CPUs plus a reader of {options.read_cpus:g} need "
                             f"{options.cpus_needed:g}; lower concurrency or CPUs per actor")
        import ray.data

        ctx = ray.data.DataContext.get_current()
        saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)  # restored below
        ctx.execution_options.preserve_order = True  # output rows in corpus order
        ctx.enable_progress_bars = progress
        if not progress:
            import logging

            logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = corpus_dataset(docs_dir, options.read_cpus).map_batches(
            EmbedActor,
            fn_constructor_kwargs={"encoder": encoder, "batch_size": batch_size, "sort_by_length": sort_by_length,
                                   "threads": max(1, int(options.num_cpus))},
            batch_size=options.batch_size, batch_format="numpy", concurrency=options.concurrency,
            num_cpus=options.num_cpus, num_gpus=options.num_gpus or None,
        )
        seen = 0
        for batch in ds.iter_batches(batch_size=chunk, batch_format="numpy", prefetch_batches=1):
            vecs = np.ascontiguousarray(batch["vector"], dtype=np.float32)
            seen += len(vecs)
            if bar is not None:
                bar.update(len(vecs))
            yield vecs
        if seen != count:
            raise RuntimeError(f"Ray embedding returned {seen} vectors for {count} passages")
    finally:
        if saved is not None:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        disconnect(started)
