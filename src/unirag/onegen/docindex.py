"""The OneGen document index: documents embedded by the generating model itself.

Each document is ``contents + document token``; its vector is the model's last-layer hidden
state at that token, L2-normalised (the same map as the query vectors of the engine). The folder
is an ordinary unirag index folder (``manifest.json``, ``index.faiss``, ``docs/``), with
``manifest.encoder`` naming the model and ``encoder_info.kind == "onegen"``; it is built once,
reused, and can be swapped at run time (:meth:`unirag.onegen.engine.OneGenEngine.swap_index`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unirag.config.fs import atomic_dir
from unirag.corpus.passage import Passage
from unirag.corpus.store import DocStore
from unirag.index.errors import IndexMismatchError
from unirag.index.vector import DOCS_DIR, Index


def embed_documents(model: Any, texts: Sequence[str], batch_size: int = 16, progress: bool = False,
                    max_tokens: int = 96, role: str = "document") -> np.ndarray:
    """``float32 [n, d]`` document vectors: ``text + document token``, hidden state at that token.

    ``model`` is a ``OneGenModel`` (its own ``embed_documents`` is used) or an
    :class:`unirag.onegen.engine.EngineModel` with ``document_token_id`` set (texts cut to
    ``max_tokens`` tokens, as ``OneGenConfig.max_doc_tokens``). ``role="entity"`` ends each text
    with the entity token instead (``EngineModel`` then needs ``entity_token_id``)."""
    if not hasattr(model, "query_token_id") and hasattr(model, "embed_documents"):
        return np.asarray(model.embed_documents(list(texts), batch_size=batch_size, progress=progress, role=role),
                          dtype=np.float32)
    import torch

    from unirag.onegen.engine import EngineModel, split_lm

    em = EngineModel.wrap(model)
    end = em.document_token_id if role == "document" else em.entity_token_id
    if end is None:
        raise ValueError(f"the model has no {role} token")
    decoder, _ = split_lm(em.lm)
    dev = next(decoder.parameters()).device
    tok = em.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    enc = tok(list(texts), add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
    seqs = [list(ids) + [end] for ids in enc]
    order = np.argsort([-len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), decoder.config.hidden_size), dtype=np.float32)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seqs), desc="embedding documents", unit=" docs")
    with torch.inference_mode():
        for s in range(0, len(seqs), batch_size):
            idx = order[s : s + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for b, i in enumerate(idx):
                ids[b, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[b, : len(seqs[i])] = 1
            h = decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
            last = h[torch.arange(len(idx), device=dev), (mask.sum(1) - 1).to(dev)]
            out[idx] = em.vectors(last).float().cpu().numpy()
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


def build_onegen_index(passages: Iterable[Passage], out: str | os.PathLike, model: Any, name: str = "",
                       factory: str = "Flat", batch_size: int = 16, progress: bool = True,
                       role: str = "document") -> Path:
    """Write an index folder at ``out`` (atomically): doc store + vectors from ``model``.

    ``name`` is recorded as ``manifest.encoder`` (defaults to the model's name)."""
    from unirag.onegen.engine import EngineModel

    em = EngineModel.wrap(model) if not hasattr(model, "embed_documents") else None
    name = name or (em.name if em else "") or _model_name(model)
    with atomic_dir(out) as tmp:
        store = DocStore.build(passages, tmp / DOCS_DIR)
        vecs = embed_documents(model, [p.contents for p in store], batch_size, progress, role=role)
        index = Index(vecs.shape[1], factory, "ip")
        index.add(vecs)
        m = index.manifest
        m.encoder = name
        m.encoder_info = {"kind": "onegen", "role": role, "normalize": True,
                          "vector": f"last-layer hidden state at the {role} token"}
        m.corpus_sha256, m.corpus_count = store.checksum, len(store)
        store.close()
        index.write_into(tmp)
    return Path(out)


def _model_name(model: Any) -> str:
    cfg = getattr(model, "config", None)
    for attr in ("name", "base_model", "name_or_path"):
        if getattr(cfg, attr, None):
            return str(getattr(cfg, attr))
    lm = getattr(model, "lm", model)
    return str(getattr(getattr(lm, "config", None), "name_or_path", "") or "onegen")


class OneGenIndex:
    """An index folder opened for the engine: ``search(vectors, k, exclude)`` and ``store``."""

    def __init__(self, index: Index, store: DocStore, path: Path | None = None):
        self.index, self.store, self.path = index, store, path

    @classmethod
    def load(cls, path: str | os.PathLike, model_name: str | None = None, verify: bool = True) -> OneGenIndex:
        """Open a folder; refuse it when ``model_name`` differs from ``manifest.encoder``."""
        path = Path(path)
        index = Index.load(path, verify=verify)
        enc = index.manifest.encoder
        if model_name and enc and enc != model_name:
            raise IndexMismatchError(f"{path} holds vectors of model '{enc}', not '{model_name}'")
        return cls(index, DocStore(path / DOCS_DIR), path)

    def __len__(self) -> int:
        return len(self.index)

    def search(self, vectors: np.ndarray, k: int = 5, exclude: set[int] | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` ``[n, k]`` best first, rows in ``exclude`` skipped (``-1`` pads)."""
        exclude = exclude or set()
        scores, rows = self.index.search(np.asarray(vectors, dtype=np.float32), k + len(exclude))
        out_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
        out_r = np.full((len(rows), k), -1, dtype=np.int64)
        for i in range(len(rows)):
            keep = [j for j in range(rows.shape[1]) if rows[i, j] >= 0 and int(rows[i, j]) not in exclude][:k]
            out_s[i, : len(keep)], out_r[i, : len(keep)] = scores[i, keep], rows[i, keep]
        return out_s, out_r

    def close(self) -> None:
        """Close the doc store."""
        self.store.close()


def resolve_onegen_dir(model: str | os.PathLike | None = None) -> Path:
    """The OneGen model folder: ``model``, else the trained default, else the packaged adapter."""
    from unirag.onegen.config import CONFIG_FILE, default_onegen_dir

    if model:
        return Path(model).expanduser()
    if (default_onegen_dir() / CONFIG_FILE).is_file():
        return default_onegen_dir()
    from unirag.onegen.model import ASSET_DIR

    if (ASSET_DIR / CONFIG_FILE).is_file():
        return ASSET_DIR
    raise FileNotFoundError(f"no trained OneGen model at {default_onegen_dir()}: train one with "
                            "`unirag train onegen` or pass --model FOLDER")


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """A short SHA-256 over a model folder's weight and config files (identifies a trained model)."""
    import hashlib

    from unirag.config.fs import sha256_file

    folder = Path(model_dir)
    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json", ".bin"):
            h.update(f.name.encode() + sha256_file(f).encode())
    return h.hexdigest()[:12]


def model_name(model_dir: str | os.PathLike) -> str:
    """The ``manifest.encoder`` name of a OneGen model folder: ``onegen:<folder>@<fingerprint>``."""
    return f"onegen:{Path(model_dir).name}@{model_fingerprint(model_dir)}"


def ensure_onegen_index(model: Any, model_dir: str | os.PathLike, role: str = "document",
                        progress: bool = True) -> Path:
    """The OneGen index of the packaged Wikipedia summaries for the model in ``model_dir``, built on
    first use into ``<cache>/indexes/`` and reused (a retrained model gets a new folder).

    ``role="entity"`` builds the entity-linking knowledge base instead (entity token, title +
    description + summary)."""
    from unirag.config.paths import cache_dir
    from unirag.data import wiki_passages

    name = model_name(model_dir) + ("" if role == "document" else f"#{role}")
    folder = cache_dir() / "indexes" / f"onegen-{role}-{name.split('@')[-1].split('#')[0]}-wiki"
    if not (folder / "manifest.json").is_file():
        if role == "document":
            build_onegen_index(wiki_passages(), folder, model, name=name, progress=progress)
        else:
            from unirag.onegen.linking import build_entity_index

            build_entity_index(folder, model, name=name, progress=progress)
    return folder
