"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``trainable.safetensors`` (parameters that require grad),
``optimizer.safetensors`` + ``optimizer.json`` (state tensors, param groups), ``state.json``
(step, epoch, scheduler, RNG states) and ``rng.safetensors`` (torch RNG state).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unirag.config.base import ConfigBase
from unirag.config.fs import atomic_dir


@dataclass
class LoraBase(ConfigBase):
    """peft LoRA settings shared by the trainers: rank, scale, dropout and wrapped modules."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def peft_config(self, task_type: str, **extra: Any) -> Any:
        """The ``peft.LoraConfig`` of these settings (``extra``: further LoraConfig fields)."""
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), task_type=task_type, **extra)


def save_checkpoint(folder: str | Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> Path:
    """Atomically write a resumable checkpoint of ``model``'s trainable parameters, the optimizer,
    the scheduler, ``state`` (JSON-able) and the RNG states into ``folder``."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        params = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(params, str(tmp / "trainable.safetensors"))
        osd = optimizer.state_dict()
        tensors, scalars = {}, {}
        for idx, st in osd["state"].items():
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"{idx}/{key}"] = val.detach().contiguous().cpu()
                else:
                    scalars[f"{idx}/{key}"] = val
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps({"param_groups": osd["param_groups"], "scalars": scalars}))
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        np_state = np.random.get_state()
        full = dict(state, scheduler=scheduler.state_dict() if scheduler is not None else None,
                    python_rng=_jsonable(random.getstate()),
                    numpy_rng=[np_state[0], np_state[1].tolist(), *np_state[2:]])
        (tmp / "state.json").write_text(json.dumps(full, indent=1))
    return folder


def load_checkpoint(folder: str | Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote (in place) and return the saved ``state``."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    params = load_file(str(folder / "trainable.safetensors"))
    named = dict(model.named_parameters())
    missing = sorted(set(params) - set(named))
    if missing:
        raise ValueError(f"{folder}: checkpoint parameters not in the model: {missing[:3]}")
    with torch.no_grad():
        for name, val in params.items():
            named[name].copy_(val)
    meta = json.loads((folder / "optimizer.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, val in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    full = json.loads((folder / "state.json").read_text())
    if scheduler is not None and full.get("scheduler") is not None:
        scheduler.load_state_dict(full["scheduler"])
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    random.setstate(_tuples(full["python_rng"]))
    ns = full["numpy_rng"]
    np.random.set_state((ns[0], np.asarray(ns[1], dtype=np.uint32), *ns[2:]))
    return {k: v for k, v in full.items() if k not in ("scheduler", "python_rng", "numpy_rng")}


def latest_checkpoint(root: str | Path) -> Path | None:
    """The ``step-N`` folder with the largest N under ``root``, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    steps = [(int(p.name.split("-")[1]), p) for p in root.glob("step-*")
             if p.name.split("-")[1].isdigit() and (p / "state.json").is_file()]
    return max(steps)[1] if steps else None


def _jsonable(x: Any) -> Any:
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x
