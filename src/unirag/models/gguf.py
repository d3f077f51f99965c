"""Dequantise a packaged GGUF checkpoint once into an ordinary safetensors folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def convert_gguf(src_dir: Path, gguf_file: str, target: Path, progress: bool = True) -> Path:
    """Load ``src_dir/gguf_file`` with transformers (fp32) and save it to ``target`` atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    status = None
    if progress:
        from rich.console import Console

        status = Console(stderr=True).status(
            f"Converting {gguf_file} to safetensors in {target} (once; about 20-30 s)"
        )
        status.start()
    try:
        tok = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(str(src_dir), gguf_file=gguf_file, dtype=torch.float32)
        # transformers 5.x keeps a GGUF quantizer on the model that refuses to save; the weights are
        # already plain fp32, so drop it and save a normal checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
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
