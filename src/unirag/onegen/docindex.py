"""A OneGen model as an embedding function, so its index is an ordinary unirag index folder.

Each document is ``contents + document token``; its vector is the model's last-layer hidden
state at that token, L2-normalised (the same map as the query vectors of the engine). The
folder is built by the one builder (:func:`unirag.retrieval.build_index`, streaming in chunks,
BM25 optional) and searched by the one dense retriever (:class:`unirag.retrieval.DenseRetriever`,
``search_vectors(..., exclude=...)`` for "never the same passage twice"); ``manifest.encoder``
names the model and ``encoder_info.kind == "onegen"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unirag.corpus.passage import Passage

KIND = "onegen"


class OneGenEncoder:
    """The embedding function of a OneGen model (a ``OneGenModel`` or an
    :class:`~unirag.models.decoding.EngineModel`): ``encode`` embeds documents (text + the token
    of ``role``, ``document`` or ``entity``), ``encode_queries`` embeds questions at the query
    token of their chat prompt, as the engine does when the model emits it."""

    def __init__(self, model: Any, role: str = "document", name: str = "", max_tokens: int | None = None):
        from unirag.models.decoding import EngineModel

        self.model = model
        self.em = EngineModel.wrap(model)
        self.role = role
        end = self.em.document_token_id if role == "document" else self.em.entity_token_id
        if end is None:
            raise ValueError(f"the model has no {role} token")
        self.end_id = int(end)
        cfg = getattr(model, "config", None)
        self.max_length = int(max_tokens or getattr(cfg, "max_doc_tokens", 96) or 96)
        self.name = name or self.em.name or _model_name(model)
        self.pooling, self.normalize = KIND, True

    @property
    def dim(self) -> int:
        """Vector dimension (the model's hidden size)."""
        from unirag.models.decoding import split_lm

        return int(split_lm(self.em.lm)[0].config.hidden_size)

    def info(self) -> dict[str, Any]:
        """What the manifest records about this embedding function."""
        return {"kind": KIND, "role": self.role, "normalize": True, "max_length": self.max_length,
                "vector": f"last-layer hidden state at the {self.role} token"}

    def _vectors(self, seqs: list[list[int]], batch_size: int, progress: bool = False, bar: Any = None,
                 ) -> np.ndarray:
        from unirag.models.decoding import split_lm
        from unirag.onegen.model import vectors_at_end

        tok = self.em.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        return vectors_at_end(split_lm(self.em.lm)[0], self.em.vectors, seqs, pad, batch_size, progress=progress,
                              desc=f"embedding ({self.role})", bar=bar)

    def encode(self, texts: Sequence[str], batch_size: int = 16, sort_by_length: bool = True,
               progress: bool = False, bar: Any = None) -> np.ndarray:
        """``float32 [n, d]`` unit vectors of ``text + role token`` (text cut to ``max_length`` tokens)."""
        from unirag.onegen.collator import encode_document

        seqs = [encode_document(self.em.tokenizer, t, self.end_id, self.max_length) for t in texts]
        return self._vectors(seqs, batch_size, progress, bar)

    def encode_queries(self, queries: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """``float32 [n, d]`` query vectors: the hidden state at the query token that opens the
        assistant turn of each question's chat prompt."""
        if self.em.query_token_id is None:
            raise ValueError("the model has no query token")
        from unirag.onegen.collator import render_prompt

        tok = self.em.tokenizer
        cfg = getattr(self.model, "config", None)
        system = getattr(cfg, "system_prompt", "") or ""
        seqs = []
        for q in queries:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
            seqs.append(tok(render_prompt(tok, msgs))["input_ids"] + [self.em.query_token_id])
        return self._vectors(seqs, batch_size)


def embed_documents(model: Any, texts: Sequence[str], batch_size: int = 16, progress: bool = False,
                    role: str = "document") -> np.ndarray:
    """``float32 [n, d]`` document vectors of ``model`` (see :class:`OneGenEncoder`)."""
    return OneGenEncoder(model, role).encode(list(texts), batch_size=batch_size, progress=progress)


def build_onegen_index(passages: Iterable[Passage], out: str | os.PathLike, model: Any, name: str = "",
                       factory: str = "Flat", batch_size: int = 16, progress: bool = True,
                       role: str = "document", bm25: bool = False) -> Path:
    """Write an index folder at ``out`` (atomically) with the one builder, vectors from ``model``.

    ``name`` is recorded as ``manifest.encoder`` (defaults to the model's name)."""
    from unirag.retrieval.build import build_index

    enc = OneGenEncoder(model, role, name)
    return build_index(passages, out, encoder=enc, factory=factory, bm25=bm25, batch_size=batch_size,
                       progress=progress)


def open_onegen_index(path: str | os.PathLike, model: Any, model_name: str | None = None, role: str = "document",
                      verify: bool = True) -> Any:
    """A :class:`~unirag.retrieval.DenseRetriever` over a OneGen index folder, queried by ``model``.

    Refuses a folder whose vectors are not a OneGen model's, or (with ``model_name``) another model's.
    A shard set (folder or ``ray://`` URI) opens a sharded retriever on Ray actors."""
    from unirag.distributed.sharded import is_sharded
    from unirag.index.errors import IndexMismatchError
    from unirag.index.vector import Index
    from unirag.retrieval.dense import DenseRetriever

    if is_sharded(path):
        from unirag.distributed.sharded import ShardedRetriever, parse_ray_uri
        from unirag.distributed.shards import read_shard_set

        s = os.fspath(path)
        info = read_shard_set(parse_ray_uri(s)[1] if s.startswith("ray:") else s)
        if info["encoder_info"].get("kind") != KIND:
            raise IndexMismatchError(f"{s} holds vectors of '{info['encoder']}', not of a OneGen model")
        if model_name and info["encoder"] and info["encoder"] != model_name:
            raise IndexMismatchError(f"{s} holds vectors of model '{info['encoder']}', not '{model_name}'")
        return ShardedRetriever.open(path, OneGenEncoder(model, role, name=info["encoder"]), verify=verify)
    path = Path(path)
    index = Index.load(path, verify=verify)
    m = index.manifest
    if m.encoder_info.get("kind") != KIND:
        raise IndexMismatchError(f"{path} holds vectors of '{m.encoder}', not of a OneGen model: build one with "
                                 "`unirag index onegen`")
    if model_name and m.encoder and m.encoder != model_name:
        raise IndexMismatchError(f"{path} holds vectors of model '{m.encoder}', not '{model_name}'")
    enc = OneGenEncoder(model, role, name=m.encoder)
    return DenseRetriever.from_parts(enc, index, path)


def _model_name(model: Any) -> str:
    cfg = getattr(model, "config", None)
    for attr in ("name", "base_model", "name_or_path"):
        if getattr(cfg, attr, None):
            return str(getattr(cfg, attr))
    lm = getattr(model, "lm", model)
    return str(getattr(getattr(lm, "config", None), "name_or_path", "") or "onegen")


def resolve_onegen_dir(model: str | os.PathLike | None = None) -> Path:
    """The OneGen model folder: ``model``, else the trained default, else the packaged adapter."""
    from unirag.onegen.config import CONFIG_FILE, default_onegen_dir

    if model:
        folder = Path(model).expanduser()
        if not (folder / CONFIG_FILE).is_file():
            from unirag.models.registry import ModelNotFoundError

            raise ModelNotFoundError(f"{folder}: not a OneGen model folder (no {CONFIG_FILE})")
        return folder
    if (default_onegen_dir() / CONFIG_FILE).is_file():
        return default_onegen_dir()
    from unirag.onegen.model import ASSET_DIR

    if (ASSET_DIR / CONFIG_FILE).is_file():
        return ASSET_DIR
    from unirag.models.registry import ModelNotFoundError

    raise ModelNotFoundError(f"no trained OneGen model at {default_onegen_dir()}: train one with "
                             "`unirag train onegen` or pass --model FOLDER")


# Files of a model folder that describe the model without changing a vector it computes.
DESCRIPTIVE_FILES = frozenset({"train_summary.json", "linking.json"})


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """A short SHA-256 over a model folder's weight and config files (identifies a trained model;
    :data:`DESCRIPTIVE_FILES` do not count, so a tuned linking threshold keeps its indexes)."""
    import hashlib

    from unirag.config.fs import sha256_file

    folder = Path(model_dir)
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.name in DESCRIPTIVE_FILES:
            continue
        if f.is_file() and f.suffix in (".safetensors", ".json", ".bin"):
            h.update(f.name.encode() + sha256_file(f).encode())
    return h.hexdigest()[:12]


def model_name(model_dir: str | os.PathLike) -> str:
    """The ``manifest.encoder`` name of a OneGen model folder: ``onegen:<folder>@<fingerprint>``."""
    return f"onegen:{Path(model_dir).name}@{model_fingerprint(model_dir)}"


def onegen_index_name(model_dir: str | os.PathLike, role: str = "document", tag: str = "wiki") -> str:
    """The cache name of a OneGen model's index of a corpus (a retrained model gets a new one)."""
    return f"onegen-{role}-{model_fingerprint(model_dir)}-{tag}"


def onegen_index_folder(model_dir: str | os.PathLike, role: str = "document") -> Any:
    """The cache :class:`~unirag.index.folder.IndexFolder` of a model's index of the packaged
    Wikipedia summaries (built or not)."""
    from unirag.index.folder import IndexFolder

    return IndexFolder.cached(onegen_index_name(model_dir, role))


def ensure_onegen_index(model: Any, model_dir: str | os.PathLike, role: str = "document",
                        progress: bool = True) -> Path:
    """The OneGen index of the packaged Wikipedia summaries for the model in ``model_dir``, built on
    first use into the cache and reused.

    ``role="entity"`` builds the entity-linking knowledge base instead (entity token, title +
    description + summary)."""
    from unirag.data import wiki_passages

    name = model_name(model_dir) + ("" if role == "document" else f"#{role}")
    folder = onegen_index_folder(model_dir, role)
    if not folder.exists():
        if role == "document":
            build_onegen_index(wiki_passages(), folder.path, model, name=name, progress=progress)
        else:
            from unirag.onegen.linking import build_entity_index

            build_entity_index(folder.path, model, name=name, progress=progress)
    return folder.path
