"""A sentence encoder exported once to ONNX and run by ONNX Runtime, for queries and for corpora.

Queries: loading torch and transformers takes most of a warm ``unirag search`` (about 8 of its 13 s on
2 cores), yet embedding one query needs neither: the encoder's graph, pooling and normalisation
included, is exported once (with torch) into the cache, and later searches load only
``onnxruntime`` and ``tokenizers``.

Corpora: ONNX Runtime embeds passages 1.8 times as fast as torch on the same 2 threads of an AMD CPU
with AVX-512 (its MLAS kernels use AVX-512 where torch's BLAS runs AVX2 ones;
``bench/bench_first_answer.py --only throughput``), and a one-off probe on an AVX2-only one found it
no slower, so :func:`corpus_encoder` gives index builds this path. The vectors equal the torch encoder's to float32 rounding (tested). float32 encoders only;
without ``onnxruntime`` installed, or with ``$UNIRAG_ONNX=0``, the torch encoder does both jobs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # bump when the exported graph changes: older files are then re-exported


def available() -> bool:
    """Whether ``onnxruntime`` and ``tokenizers`` can be imported (checked without importing them)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("tokenizers") is not None


def export_dir(folder: str | os.PathLike) -> Path:
    """Cache folder of the ONNX export of the encoder in model ``folder``, keyed by the folder's
    path and its weight files' sizes and modification times (new weights: a new export)."""
    import hashlib

    from unirag.config.paths import cache_dir

    folder = Path(folder).resolve()
    h = hashlib.sha256(f"{FORMAT}:{folder}".encode())
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_dir() / "onnx" / f"{folder.name}-{h.hexdigest()[:16]}"


def export(encoder: Any, folder: str | os.PathLike) -> Path | None:
    """Export ``encoder`` (a float32 :class:`~unirag.models.encoder.Encoder` loaded from model
    ``folder``) with its pooling and normalisation into :func:`export_dir` (atomically); ``None``
    when it cannot be (no ``tokenizer.json``, not float32, or the exporter fails)."""
    import shutil
    import warnings

    import torch

    from unirag.config.fs import atomic_dir

    folder = Path(folder)
    if encoder.dtype != "float32" or not (folder / "tokenizer.json").is_file():
        return None
    out = export_dir(folder)
    if (out / "meta.json").is_file():
        return out

    class Pooled(torch.nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc
            self.model = enc.model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            return self.enc.pool(hidden, attention_mask)

    try:
        with atomic_dir(out) as tmp:  # whole or absent, even across a crash
            batch = encoder.tokenizer(["an example query", "a second, longer example query for the export"],
                                      padding=True, return_tensors="pt")
            names = ["input_ids", "attention_mask", "token_type_ids"]
            args = tuple(batch[n] if n in batch else torch.zeros_like(batch["input_ids"]) for n in names)
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                torch.onnx.export(Pooled(encoder).eval(), args, str(tmp / "model.onnx"), input_names=names,
                                  output_names=["vectors"], opset_version=17, dynamo=False,
                                  dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                                "vectors": {0: "batch"}})
            shutil.copyfile(folder / "tokenizer.json", tmp / "tokenizer.json")
            meta = {"format": FORMAT, "name": encoder.name, "dim": encoder.dim, "max_length": encoder.max_length,
                    "info": encoder.info(), "pad_id": int(encoder.tokenizer.pad_token_id or 0),
                    "pad_token": str(encoder.tokenizer.pad_token)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    except Exception:  # an encoder the exporter cannot trace (or no onnx package) stays on the torch path
        return None
    return out


class OnnxEncoder:
    """An index's embedding function on ONNX Runtime: ``name``, ``dim``, ``dtype``, ``info()``,
    ``token_counts`` and ``encode`` as :class:`~unirag.models.encoder.Encoder` (length-sorted batches
    under a token budget, progress). ``threads``: intra-op threads of the next batch (a session per
    thread count, made on first use), so a build can take a core back half-way."""

    def __init__(self, path: str | os.PathLike, spec: str | None = None, threads: int | None = None,
                 batch_tokens: int | None = None):
        from tokenizers import Tokenizer

        from unirag.models.encoder import DEFAULT_BATCH_TOKENS, default_threads

        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.name: str = self.meta["name"]
        self.spec: str = spec or self.name  # what loads the same encoder with torch
        self.dim: int = int(self.meta["dim"])
        self.dtype = "float32"
        self.max_length: int = int(self.meta["max_length"])
        self.batch_tokens = DEFAULT_BATCH_TOKENS if batch_tokens is None else int(batch_tokens)
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()  # batches are padded here, to their own longest text
        self.pad_id = int(self.meta["pad_id"])
        self.threads = int(threads or default_threads())
        self._sessions: dict[int, Any] = {}
        self.inputs = [i.name for i in self.session.get_inputs()]  # the exporter drops inputs a graph ignores

    @property
    def session(self) -> Any:
        """The ONNX Runtime session for the current ``threads``."""
        return self._session(self.threads)

    def _session(self, threads: int) -> Any:
        n = max(1, int(threads))
        if n not in self._sessions:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            # idle threads sleep instead of spinning: the same corpus throughput, and a server that
            # searches between generation steps keeps its cores for generating
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[n] = ort.InferenceSession(str(self.path / "model.onnx"), opts,
                                                     providers=["CPUExecutionProvider"])
        return self._sessions[n]

    def info(self) -> dict:
        """What an index manifest records about this encoder."""
        return dict(self.meta["info"])

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the encoder sees it (special tokens included, truncated)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]

    def _run(self, encs: list, threads: int | None = None) -> np.ndarray:
        """Vectors of tokenised texts, padded to the longest of them, on ``threads`` (``None``: the
        encoder's ``threads`` at this batch)."""
        width = max(len(e.ids) for e in encs)
        feed = {n: np.zeros((len(encs), width), dtype=np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}
        feed["input_ids"].fill(self.pad_id)
        for r, e in enumerate(encs):
            m = len(e.ids)
            feed["input_ids"][r, :m] = e.ids
            feed["attention_mask"][r, :m] = 1
            feed["token_type_ids"][r, :m] = e.type_ids
        return self._session(threads or self.threads).run(None, {k: feed[k] for k in self.inputs})[0]

    def encode(self, texts: list[str], batch_size: int = 64, sort_by_length: bool = True, progress: bool = False,
               desc: str = "embedding", bar=None, threads: int | None = None,
               batch_tokens: int | None = None) -> np.ndarray:
        """Float32 vectors ``[len(texts), dim]`` (pooled and normalised as the encoder does), in the
        input order; the arguments as :meth:`unirag.models.encoder.Encoder.encode` (``threads``: this
        call only)."""
        from unirag.models.encoder import embed_in_batches

        encs = self.tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encs] if sort_by_length else None
        budget = self.batch_tokens if batch_tokens is None else int(batch_tokens)
        return embed_in_batches(len(encs), self.dim, lambda idx: self._run([encs[i] for i in idx], threads), lengths,
                                batch_size, budget, bar=bar, progress=progress, desc=desc)


def corpus_encoder(name: str, batch_tokens: int | None = None, threads: int | None = None) -> Any:
    """The encoder that embeds a corpus for encoder ``name``: its ONNX export on ONNX Runtime
    (exported now when not cached yet) for a float32 encoder in a local folder, else the torch
    :class:`~unirag.models.encoder.Encoder`. ``$UNIRAG_ONNX=0`` keeps the torch encoder."""
    from unirag.models.encoder import DEFAULT_BATCH_TOKENS, Encoder, split_dtype
    from unirag.models.registry import resolve_model

    batch_tokens = DEFAULT_BATCH_TOKENS if batch_tokens is None else int(batch_tokens)
    base, dtype = split_dtype(name)
    if dtype != "float32" or os.environ.get("UNIRAG_ONNX", "1") == "0" or not available():
        return Encoder.from_pretrained(name, batch_tokens=batch_tokens)
    folder = resolve_model(base)
    cached = export_dir(folder) if Path(folder).is_dir() else None
    if cached is not None and not (cached / "meta.json").is_file():
        cached = export(Encoder.from_pretrained(name), folder)
    if cached is None:  # a hub id, or an encoder the exporter cannot trace
        return Encoder.from_pretrained(name, batch_tokens=batch_tokens)
    return OnnxEncoder(cached, spec=name, threads=threads, batch_tokens=batch_tokens)


def query_encoder(name: str) -> Any:
    """The encoder of an index for its queries: its ONNX export on ONNX Runtime when one is cached,
    else the torch :class:`~unirag.models.encoder.Encoder` (exported now for the next process, when
    ``onnxruntime`` is installed). ``$UNIRAG_ONNX=0`` keeps the torch encoder."""
    from unirag.models.encoder import Encoder, split_dtype
    from unirag.models.registry import resolve_model

    base, dtype = split_dtype(name)
    if dtype != "float32" or os.environ.get("UNIRAG_ONNX", "1") == "0" or not available():
        return Encoder.from_pretrained(name)
    folder = resolve_model(base)
    if not Path(folder).is_dir():  # a hub id: no local weights to key an export by
        return Encoder.from_pretrained(name)
    cached = export_dir(folder)
    if (cached / "meta.json").is_file():
        try:
            return OnnxEncoder(cached, spec=name)
        except Exception:  # an unreadable export: fall back, and export again below
            pass
    encoder = Encoder.from_pretrained(name)
    export(encoder, folder)
    return encoder
