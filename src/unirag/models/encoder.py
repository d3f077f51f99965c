"""A transformer text encoder with pooling: the dense retriever's query and document encoder."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from unirag.models.registry import load_error, resolve_model

if TYPE_CHECKING:
    import torch

Pooling = Literal["mean", "cls", "last"]
EncoderDtype = Literal["float32", "int8"]
DTYPES = ("float32", "int8")
INT8_SUFFIX = "+int8"  # an encoder name ending so (e.g. in a manifest) loads the int8 path
# Padded tokens per batch when embedding many texts on a CPU. Small batches keep the activations
# in the CPU's caches: all-MiniLM-L6-v2 over the Wikipedia summaries (2 threads) embeds about 32
# passages/s in batches of at most 2,048 tokens against 22 in batches of 64 passages
# (bench/bench_first_answer.py --only batching). A GPU wants larger batches: raise it there.
DEFAULT_BATCH_TOKENS = 2048


def split_dtype(name: str) -> tuple[str, EncoderDtype]:
    """``"all-minilm-l6-v2+int8"`` → ``("all-minilm-l6-v2", "int8")``; other names are float32."""
    if name.endswith(INT8_SUFFIX):
        return name[: -len(INT8_SUFFIX)], "int8"
    return name, "float32"


def cores_available() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads for work that was given no count: ``$UNIRAG_THREADS`` when set, else every available
    core (so several jobs side by side can each be held to one thread)."""
    env = os.environ.get("UNIRAG_THREADS", "").strip()
    return int(env) if env else cores_available()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (``None`` or 0: :func:`default_threads`)
    and restore the previous count afterwards. torch and FAISS share one OpenMP runtime in these
    wheels, so this also sets FAISS's thread count for the block."""
    import torch

    n = int(threads) if threads else default_threads()
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def quantize_int8(model):
    """Dynamic int8 quantisation of every ``nn.Linear``: weights int8 with one scale per output row
    (per-channel: median cosine to float32 0.985 on the Wikipedia summaries, against 0.945 with one
    scale per matrix), activations quantised on the fly, float32 elsewhere."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})


def _read_st_pooling(folder: str) -> Pooling | None:
    cfg = Path(folder) / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return None
    data = json.loads(cfg.read_text())
    if data.get("pooling_mode_cls_token"):
        return "cls"
    if data.get("pooling_mode_lasttoken"):
        return "last"
    return "mean"


class Encoder:
    """``AutoModel`` + tokenizer + pooling (+ optional L2 normalisation).

    ``encode`` returns float32 numpy vectors for indexing and search (no grad, length-sorted
    batches of at most ``batch_tokens`` padded tokens); ``embed`` returns a torch tensor with grad
    for training.
    """

    def __init__(self, model, tokenizer, name: str, pooling: Pooling = "mean", normalize: bool = True,
                 max_length: int = 256, dtype: EncoderDtype = "float32", batch_tokens: int = DEFAULT_BATCH_TOKENS):
        self.model = model
        self.batch_tokens = int(batch_tokens)
        self.tokenizer = tokenizer
        self.dtype: EncoderDtype = dtype
        base, _ = split_dtype(name)
        self.name = base + INT8_SUFFIX if dtype == "int8" else base
        self.pooling: Pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        # "bfloat16": ``encode`` multiplies in bfloat16 under autocast (weights, norms, softmax and
        # pooling stay float32); chosen by :func:`unirag.models.onnx_encoder.faster_runtime` on CPUs
        # that multiply bfloat16 natively
        self.compute = "float32"

    @classmethod
    def from_pretrained(cls, name: str, pooling: Pooling | None = None, normalize: bool = True,
                        max_length: int | None = None, device: str = "cpu",
                        dtype: EncoderDtype | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> Encoder:
        """Load an encoder from an alias, a local folder or a hub id; pooling is read from a
        sentence-transformers folder when not given (default mean).

        ``dtype``: ``"float32"`` or ``"int8"`` (dynamic int8 quantisation of the Linear layers, CPU
        only). A name ending in ``+int8`` (as an int8 index's manifest records it) means int8, so
        queries of an index are embedded by the path that embedded its passages. ``batch_tokens``:
        the default padded-token budget of an ``encode`` batch (0: ``batch_size`` texts only)."""
        from transformers import AutoModel, AutoTokenizer

        from unirag.models.quiet import quiet_loading

        name, named_dtype = split_dtype(name)
        dtype = dtype or named_dtype
        if dtype not in DTYPES:
            from unirag.config.errors import UsageError

            raise UsageError(f"encoder dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if dtype == "int8" and str(device) != "cpu":
            from unirag.config.errors import UsageError

            raise UsageError(f"int8 encoders run on the CPU only, not {device}")
        folder = resolve_model(name)
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(folder)
                model = AutoModel.from_pretrained(folder).to(device).eval()
        except OSError as exc:
            raise load_error(name, exc) from None
        unirag_cfg = Path(folder) / "unirag_encoder.json"
        saved = json.loads(unirag_cfg.read_text()) if unirag_cfg.is_file() else {}
        pooling = pooling or saved.get("pooling") or _read_st_pooling(folder) or "mean"
        if max_length is None:
            max_length = saved.get("max_length") or min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
            st_cfg = Path(folder) / "sentence_bert_config.json"
            if st_cfg.is_file():
                max_length = json.loads(st_cfg.read_text()).get("max_seq_length", max_length)
            positions = getattr(model.config, "max_position_embeddings", None)
            if positions:  # a tokenizer saved with a larger model's limit must not overrun the positions
                max_length = min(int(max_length), int(positions))
        if dtype == "int8":
            model = quantize_int8(model)
        return cls(model, tokenizer, saved.get("name", name), pooling, saved.get("normalize", normalize), max_length,
                   dtype, batch_tokens)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Save weights, tokenizer and the pooling settings to ``path`` (float32 encoders only:
        an int8 one is the float32 folder loaded with ``dtype="int8"``)."""
        if self.dtype != "float32":
            raise ValueError(f"save_pretrained: save the float32 encoder; {self.dtype} is applied at load time")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        cfg = {"name": self.name, "pooling": self.pooling, "normalize": self.normalize,
               "max_length": self.max_length}
        (path / "unirag_encoder.json").write_text(json.dumps(cfg, indent=2) + "\n")

    def info(self) -> dict:
        """What an index manifest records about this encoder."""
        info = {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length,
                "dtype": self.dtype}
        if self.compute != "float32" and self.dtype == "float32":
            info["compute"] = self.compute
        return info

    @property
    def dim(self) -> int:
        """Output vector dimension."""
        return int(self.model.config.hidden_size)

    @property
    def device(self):
        import torch

        p = next(self.model.parameters(), None)  # a quantised model keeps only LayerNorm / embeddings
        return p.device if p is not None else torch.device("cpu")

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool token states ``[B, T, H]`` with attention ``mask`` ``[B, T]`` into ``[B, H]``."""
        import torch

        if self.pooling == "cls":
            out = hidden[:, 0]
        elif self.pooling == "last":
            last = mask.sum(1) - 1
            out = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the encoder sees it (special tokens included, truncated)."""
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Vectors ``[len(texts), dim]`` as a torch tensor, with grad if the model is training."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return self._forward(batch)

    def _forward(self, batch) -> torch.Tensor:
        batch = batch.to(self.device)
        hidden = self.model(**batch).last_hidden_state
        return self.pool(hidden, batch["attention_mask"])

    def encode(self, texts: list[str], batch_size: int = 64, sort_by_length: bool = True,
               progress: bool = False, desc: str = "embedding", bar=None, threads: int | None = None,
               batch_tokens: int | None = None, compute: str | None = None) -> np.ndarray:
        """Float32 vectors ``[len(texts), dim]``, returned in the input order.

        With ``sort_by_length`` the texts are tokenised once, sorted by token count (longest first,
        so little padding) and cut into batches of at most ``batch_size`` texts and at most
        ``batch_tokens`` padded tokens (``None``: the encoder's ``batch_tokens``; 0: no token
        budget). ``bar``: an open progress object with ``update(n)`` (:class:`unirag.progress.Progress`,
        a tqdm bar) to advance, for callers that embed in several chunks, instead of a new one.
        ``threads``: torch threads for this call (restored after; ``None`` keeps the current setting).
        ``compute``: ``float32`` or ``bfloat16`` matrix products for this call (``None``: the
        encoder's ``compute``; int8 encoders ignore it)."""
        import torch

        n = len(texts)
        budget = self.batch_tokens if batch_tokens is None else int(batch_tokens)
        tokens = self.tokenizer(list(texts), truncation=True, max_length=self.max_length) if sort_by_length and n else None

        def run(idx: np.ndarray) -> np.ndarray:
            if tokens is None:
                vecs = self.embed([texts[i] for i in idx])
            else:
                vecs = self._forward(self.tokenizer.pad([{k: v[i] for k, v in tokens.items()} for i in idx],
                                                        return_tensors="pt"))
            return vecs.float().cpu().numpy()

        lengths = [len(ids) for ids in tokens["input_ids"]] if tokens is not None else None
        was_training = self.model.training
        self.model.eval()
        bf16 = (compute or self.compute) == "bfloat16" and self.dtype == "float32"
        try:
            with (torch_threads(threads) if threads else contextlib.nullcontext(), torch.inference_mode(),
                  torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()):
                return embed_in_batches(n, self.dim, run, lengths, batch_size, budget, bar=bar, progress=progress,
                                        desc=desc)
        finally:
            self.model.train(was_training)


def embed_in_batches(n: int, dim: int, run: Callable[[np.ndarray], np.ndarray], lengths: list[int] | None,
                     batch_size: int, budget: int, bar=None, progress: bool = False,
                     desc: str = "embedding") -> np.ndarray:
    """``[n, dim]`` float32 vectors, ``run(rows)`` embedding each batch of input rows.

    With ``lengths`` (token counts) the rows go longest first in :func:`token_batches` (little
    padding), and a :class:`unirag.progress.Progress` ``bar`` is told the tokens (its time left then
    follows the work); without, batches of ``batch_size`` in input order. ``bar``: an open progress
    object with ``update(n)`` (or ``progress``: a new one, closed at the end)."""
    out = np.zeros((n, dim), dtype=np.float32)
    if n == 0:
        return out
    if lengths is not None:
        order = np.argsort([-x for x in lengths], kind="stable")
        batches = token_batches([lengths[i] for i in order], batch_size, budget)
    else:
        order = np.arange(n)
        batches = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    own_bar = bar is None and progress
    if own_bar:
        from unirag.progress import Progress

        bar = Progress(n, desc, unit="texts")
    by_work = lengths is not None and hasattr(bar, "expect")
    if by_work:
        bar.expect(n, sum(lengths))
    try:
        for start, stop in batches:
            idx = order[start:stop]
            out[idx] = run(idx)
            if by_work:
                bar.update(len(idx), work=sum(lengths[i] for i in idx))
            elif bar is not None:
                bar.update(len(idx))
    finally:
        if own_bar:
            bar.close()
    return out


def token_batches(lengths: list[int], batch_size: int, budget: int) -> list[tuple[int, int]]:
    """Cut texts whose token counts ``lengths`` are sorted longest first into ``(start, stop)``
    batches of at most ``batch_size`` texts whose padded size (count × first length) stays within
    ``budget`` tokens (``0``: no budget); a text longer than the budget gets a batch of its own."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out, start, n = [], 0, len(lengths)
    while start < n:
        size = batch_size if budget <= 0 else max(1, min(batch_size, budget // max(1, lengths[start])))
        out.append((start, min(start + size, n)))
        start += size
    return out
