"""The OneGen, RAG and DPR trainers under two processes (``accelerate.debug_launcher``, gloo on CPU).

Per trainer, on tiny dropout-free models (``tests/train/runs.py``), a 4-step schedule with a global
batch of 3 (split 2 + 1 between the processes: the per-process sums over global counts are exercised
on uneven shares; OneGen and DPR gather their in-batch negatives across the processes, OneGen
accumulates 2 micro-batches per step):

* A: one process, checkpoints at steps 2 and 4 (the reference);
* B: two processes, stopped after step 2: losses and step-2 parameters equal A's; exactly one
  checkpoint folder was written (by the main process, of the unwrapped model);
* C: one process resuming B's checkpoint: steps 3-4 (losses, step-4 parameters) equal A's;
* D: two processes resuming A's step-2 checkpoint: the same.

Tolerances (``tests/tolerance.py``).  The two-process runs compute the same sums, split into
per-process partial sums and an all-reduce, so a loss differs from A's by the float32 rounding of its
accumulated terms: ``f32_tol(|loss|, n)``, ``n`` the reduction lengths of the model (``model_terms``)
plus the global batch's tokens.  The losses of steps 3-4 are computed with the parameters the earlier
steps produced, so they check the whole trajectory.

A parameter after ``k`` AdamW steps differs by the rounding of each stored value (``eps32 · |θ|`` per
step) plus the error of the update ``lr · m / sqrt(v)``, which has the relative error of the element's
gradient.  That error is the rounding of the tensor's largest gradients, which Adam's normalisation
does not average out, so for an element with a gradient of the tensor's scale the deterministic bound
holds: ``k · (eps32 · max|θ| + lr · f32_tol(1, n, worst_case=True))``.  An element whose gradient is
far smaller than its tensor's largest carries a larger relative error, and one whose gradient is zero
by a symmetry of the loss is moved by rounding noise alone, normalised by Adam into steps of up to
``lr`` of either sign: attention key biases (softmax ignores a constant added to a row of scores) and
DPR's passage-tower last bias (the in-batch softmax ignores a constant vector added to every passage),
or rarely-seen position rows.  So at most 1% of the elements may exceed the bound, and every element
stays within ``2 k lr`` (k Adam steps of either sign); a wrong example or a wrong gradient scale
moves nearly every element past the bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.tolerance import EPS32, f32_tol, model_terms
from tests.train.runs import ck_folder, run_folder

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore")
LR = {"onegen": 5e-3, "rag": 3e-3, "dpr": 1e-3}           # the largest learning rate of each run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both stages, each in a fresh interpreter (a process that has run torch kernels must not fork)."""
    root = tmp_path_factory.mktemp("accel")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    for stage in ("reference", "multi"):
        t0 = time.time()
        res = subprocess.run([sys.executable, "-m", "tests.train.runs", stage, str(root)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{stage} failed ({time.time() - t0:.0f} s):\n{res.stderr[-6000:]}"
    return root


def _losses(root: Path, kind: str, run: str) -> dict[int, float]:
    log = run_folder(root, kind, run) / "log.jsonl"
    return {r["step"]: r["loss"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r}


def _params(root: Path, kind: str, run: str, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ck_folder(root, kind, run) / f"step-{step}" / "trainable.safetensors"))


def _n_terms(root: Path, kind: str) -> int:
    """Reduction lengths on a loss's path: the model's layers over a span of 128 positions, plus the
    global batch (3 examples of up to 128 tokens, or 3 × (1 + 1) passages for DPR's scores)."""
    from transformers import AutoConfig

    folder = root / "onegen-parts" / "tiny" if kind == "onegen" else root / "rag-parts" / "enc"
    terms = model_terms(SimpleNamespace(config=AutoConfig.from_pretrained(folder)), 128, log_softmax=kind == "onegen")
    if kind == "rag":
        terms += model_terms(SimpleNamespace(config=AutoConfig.from_pretrained(root / "rag-parts" / "gen")), 128)
    return terms + 3 * 128


def _check(root: Path, kind: str) -> None:
    n = _n_terms(root, kind)
    la = _losses(root, kind, "a")
    assert sorted(la) == [1, 2, 3, 4]
    for run, steps, at in (("b", [1, 2], 2), ("c", [3, 4], 4), ("d", [3, 4], 4)):
        lb = _losses(root, kind, run)
        assert [s for s in sorted(lb) if s in steps] == steps and max(lb) == steps[-1], (run, lb)
        for s in steps:
            assert abs(lb[s] - la[s]) <= f32_tol(abs(la[s]), n), (run, s, la[s], lb[s], f32_tol(abs(la[s]), n))
        pa, pb = _params(root, kind, "a", at), _params(root, kind, run, at)
        assert pa.keys() == pb.keys()
        over = total = 0
        for name in pa:
            err = (pa[name] - pb[name]).abs()
            tol = at * (EPS32 * float(pa[name].abs().max()) + LR[kind] * f32_tol(1.0, n, worst_case=True))
            over, total = over + int((err > tol).sum()), total + err.numel()
            assert float(err.max()) <= 2 * at * LR[kind], (run, name, float(err.max()))
        assert over <= 0.01 * total, (run, over, total)
    # B: one process wrote one checkpoint, of the unwrapped model (A's parameter names)
    assert sorted(p.name for p in ck_folder(root, kind, "b").iterdir() if p.is_dir()) == ["step-2"]


def test_onegen_two_processes_match_one(runs):
    _check(runs, "onegen")


def test_rag_two_processes_match_one(runs):
    _check(runs, "rag")


def test_dpr_two_processes_match_one(runs):
    _check(runs, "dpr")


def test_stage_times(runs):
    """Keep CI fast: both stages together (3 trainers × 4 runs) stay well under two minutes here."""
    seconds = sum(json.loads((runs / f"{s}.json").read_text())["seconds"] for s in ("reference", "multi"))
    print(f"accelerate runs: {seconds:.0f} s")
    assert seconds < 600
