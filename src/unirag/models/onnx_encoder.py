"""A sentence encoder exported once to ONNX and run by ONNX Runtime, for queries and for corpora.

Queries: loading torch and transformers takes most of a warm ``unirag search`` (about 8 of its 13 s on
2 cores), yet embedding one query needs neither: the encoder's graph, pooling and normalisation
included, is exported once (with torch) into the cache, and later searches load only
``onnxruntime`` and ``tokenizers``.

Corpora: which runtime embeds passages fastest depends on the CPU. On 2 threads of an AMD CPU
with AVX-512, ONNX Runtime ran 1.8 times as fast as torch (its MLAS kernels use AVX-512 where
torch's BLAS runs AVX2 ones); on an Intel Xeon with AVX-512 torch was 1.3 times as fast, and torch
with bfloat16 products (AMX) 1.8 times as fast again (``bench/bench_first_answer.py --only
throughput``, ``bench/bench_encoder_compute.py``). So :func:`corpus_encoder` races the candidates
once per machine, encoder and thread count (a few seconds, :func:`faster_runtime`) and builds with
the winner. The float32 runtimes give the same vectors to float32 rounding (tested). float32
encoders only; ``$UNIRAG_ONNX``: ``auto`` (default), ``1`` (ONNX Runtime for corpora too), ``0``
(float32 torch for queries and corpora); without ``onnxruntime`` installed the torch encoder does
both jobs.
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


def setting() -> str:
    """``$UNIRAG_ONNX`` as ``auto``, ``onnx`` or ``torch`` (``0``/``torch``: torch everywhere;
    ``1``/``onnx``: ONNX Runtime for corpora as well as queries; anything else: ``auto``)."""
    v = os.environ.get("UNIRAG_ONNX", "auto").strip().lower()
    return {"0": "torch", "torch": "torch", "1": "onnx", "onnx": "onnx"}.get(v, "auto")


def corpus_encoder(name: str, batch_tokens: int | None = None, threads: int | None = None) -> Any:
    """The encoder that embeds a corpus for encoder ``name`` on ``threads`` (``None``: every
    core): for a float32 encoder in a local folder, its ONNX export on ONNX Runtime or the torch
    :class:`~unirag.models.encoder.Encoder` (``compute`` float32 or bfloat16), whichever
    :func:`faster_runtime` measured fastest on this machine (``$UNIRAG_ONNX`` overrides, see
    :func:`setting`); else the torch encoder."""
    from unirag.models.encoder import DEFAULT_BATCH_TOKENS, Encoder, default_threads, split_dtype
    from unirag.models.registry import resolve_model

    batch_tokens = DEFAULT_BATCH_TOKENS if batch_tokens is None else int(batch_tokens)
    base, dtype = split_dtype(name)
    mode = setting()
    if dtype != "float32" or mode == "torch" or not available():
        return Encoder.from_pretrained(name, batch_tokens=batch_tokens)
    folder = resolve_model(base)
    cached = export_dir(folder) if Path(folder).is_dir() else None
    torch_enc = None
    if cached is not None and not (cached / "meta.json").is_file():
        torch_enc = Encoder.from_pretrained(name, batch_tokens=batch_tokens)
        cached = export(torch_enc, folder)
    if cached is None:  # a hub id, or an encoder the exporter cannot trace
        return torch_enc or Encoder.from_pretrained(name, batch_tokens=batch_tokens)
    n = int(threads or default_threads())
    load_onnx = _once(lambda: OnnxEncoder(cached, spec=name, threads=n, batch_tokens=batch_tokens))
    if mode == "onnx":
        return load_onnx()
    load_torch = _once(lambda: torch_enc or Encoder.from_pretrained(name, batch_tokens=batch_tokens))
    choice = faster_runtime(cached, load_onnx, load_torch, n)  # a recorded choice loads only the winner
    if choice == "onnx":
        return load_onnx()
    enc = load_torch()
    enc.compute = "bfloat16" if choice == "torch-bf16" else "float32"
    return enc


def _once(make: Any) -> Any:
    """``make`` called on first use only; later calls return the same object."""
    made: list[Any] = []

    def get() -> Any:
        if not made:
            made.append(make())
        return made[0]

    return get


RUNTIMES = ("onnx", "torch", "torch-bf16")  # what faster_runtime may pick
RACE_TEXT = ("{i}. The river rises in the highlands and flows north through a wide valley, where towns grew "
             "up around the mills of the nineteenth century; its lower course, navigable since Roman times, "
             "carried grain, timber and stone to the coast, and the delta it forms is a protected wetland.")


def race_texts(n: int = 40) -> list[str]:
    """``n`` passages of 20 to 200 words (about 25 to 260 tokens, spread as a corpus of Wikipedia
    leads is): which runtime wins depends on the length, short or long."""
    words = " ".join(RACE_TEXT.format(i=i) for i in range(8)).split()
    return [" ".join(words[i % 5: i % 5 + 20 + (i * 37) % 181]) for i in range(n)]


def faster_runtime(export: Path, load_onnx: Any, load_torch: Any, threads: int, rounds: int = 2) -> str:
    """``onnx``, ``torch`` or ``torch-bf16``: which embeds passages fastest with this encoder on
    this CPU and ``threads`` threads. ``torch-bf16`` (bfloat16 matrix products under autocast) runs
    only where the CPU multiplies bfloat16 natively; its vectors differ from float32 ones by a
    cosine of about 1e-5 (docs/first-run.md measures retrieval with it). Measured once
    (:func:`race_texts` on each runtime, best of ``rounds``, alternating, after a warm-up; a few
    seconds on 2 cores) and recorded in ``runtime.json`` beside the export, keyed by CPU model and
    thread count, so a cache moved to another machine measures again. ``load_onnx`` /
    ``load_torch`` return the two encoders, called only when a race runs."""
    import time

    from unirag.config.base import atomic_write_text
    from unirag.models.encoder import torch_threads
    from unirag.models.registry import cpu_has_bf16, cpu_model

    record = export / "runtime.json"
    key = f"{cpu_model()}|{threads}"
    try:
        known = json.loads(record.read_text())
        if known.get(key, {}).get("runtime") in RUNTIMES:
            return known[key]["runtime"]
    except (OSError, ValueError, AttributeError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    onnx_enc, torch_enc = load_onnx(), load_torch()
    texts = race_texts()
    runs = {"onnx": lambda t: onnx_enc.encode(t, threads=threads),
            "torch": lambda t: torch_enc.encode(t, threads=threads, compute="float32")}
    if cpu_has_bf16():
        runs["torch-bf16"] = lambda t: torch_enc.encode(t, threads=threads, compute="bfloat16")
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    with torch_threads(threads):
        for run in runs.values():
            run(texts[:8])  # warm-up: first-call allocations and kernel choices
        for _ in range(rounds):
            for k, run in runs.items():
                t = time.perf_counter()
                run(texts)
                seconds[k].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in seconds.items()}
    choice = min(best, key=lambda k: best[k])
    known[key] = {"runtime": choice, "seconds": best, "passages": len(texts), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        atomic_write_text(record, json.dumps(known, indent=1) + "\n")
    except OSError:  # a read-only cache: measured again next time
        pass
    return choice


def query_encoder(name: str) -> Any:
    """The encoder of an index for its queries: its ONNX export on ONNX Runtime when one is cached,
    else the torch :class:`~unirag.models.encoder.Encoder` (exported now for the next process, when
    ``onnxruntime`` is installed). ``$UNIRAG_ONNX=0`` keeps the torch encoder (queries are short:
    ONNX Runtime's lighter start wins on every CPU measured, so ``auto`` picks it here)."""
    from unirag.models.encoder import Encoder, split_dtype
    from unirag.models.registry import resolve_model

    base, dtype = split_dtype(name)
    if dtype != "float32" or setting() == "torch" or not available():
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
