"""A transformer text encoder with pooling: the dense retriever's query and document encoder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from unirag.models.registry import load_error, resolve_model

if TYPE_CHECKING:
    import torch

Pooling = Literal["mean", "cls", "last"]


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
    batches); ``embed`` returns a torch tensor with grad for training.
    """

    def __init__(self, model, tokenizer, name: str, pooling: Pooling = "mean", normalize: bool = True,
                 max_length: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pooling: Pooling = pooling
        self.normalize = normalize
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, name: str, pooling: Pooling | None = None, normalize: bool = True,
                        max_length: int | None = None, device: str = "cpu") -> Encoder:
        """Load an encoder from an alias, a local folder or a hub id; pooling is read from a
        sentence-transformers folder when not given (default mean)."""
        from transformers import AutoModel, AutoTokenizer

        from unirag.models.quiet import quiet_loading

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
        return cls(model, tokenizer, saved.get("name", name), pooling, saved.get("normalize", normalize), max_length)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Save weights, tokenizer and the pooling settings to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        cfg = {"name": self.name, "pooling": self.pooling, "normalize": self.normalize,
               "max_length": self.max_length}
        (path / "unirag_encoder.json").write_text(json.dumps(cfg, indent=2) + "\n")

    @property
    def dim(self) -> int:
        """Output vector dimension."""
        return int(self.model.config.hidden_size)

    @property
    def device(self):
        return next(self.model.parameters()).device

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

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Vectors ``[len(texts), dim]`` as a torch tensor, with grad if the model is training."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        return self.pool(hidden, batch["attention_mask"])

    def encode(self, texts: list[str], batch_size: int = 64, sort_by_length: bool = True,
               progress: bool = False, desc: str = "embedding", bar=None) -> np.ndarray:
        """Float32 vectors ``[len(texts), dim]``; batches are formed from length-sorted texts
        (less padding) and returned in the input order. ``bar``: an open progress bar to advance
        (for callers that embed in several chunks) instead of a new one."""
        import torch

        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable") if sort_by_length else np.arange(n)
        own_bar = bar is None and progress
        if own_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=desc, unit=" texts")
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                vecs = self.embed([texts[i] for i in idx])
                out[idx] = vecs.float().cpu().numpy()
                if bar is not None:
                    bar.update(len(idx))
        if own_bar:
            bar.close()
        self.model.train(was_training)
        return out
