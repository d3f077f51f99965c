"""What the trainers share to run under ``accelerate launch --num_processes N``.

Batch semantics (every trainer): a config's ``batch_size`` is the *global* micro-batch, the examples
all processes see together in one forward; each process takes its consecutive share of it
(:func:`local_share`, accelerate's ``split_between_processes``), so the same config trains on the same
examples in the same order with any number of processes, and one optimizer step sees
``batch_size × grad_accum`` examples. The data order is a function of the seed and the position in
the schedule only, and checkpoints hold the unwrapped model, so a run saved with N processes resumes
with M.

Losses are sums over the process's share divided by the global count (known on every process
without communication), multiplied by N because DDP averages the gradients of the N processes: the
gradient is the gradient of the global-batch mean, as in one process. In-batch negatives can be
gathered across processes with gradients (:func:`gather_rows`); every process then computes the loss
of the whole global batch, whose gradient reaches each process's own rows N times over (the backward
of the all-gather sums the copies), which DDP's average turns back into one.
"""

from __future__ import annotations

from typing import Any, Sequence


def is_main_process() -> bool:
    """True in the main process of an ``accelerate launch`` run (and in a plain single process)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def make_accelerator(grad_accum: int = 1, mixed_precision: str = "no", cpu: bool = False) -> Any:
    """The trainers' Accelerator: ``split_batches=True`` (the batch size is global, so a prepared
    scheduler steps once per optimizer step whatever N is) and DDP that tolerates parameters without
    a gradient in a step (a BERT pooler, a frozen tower). Several processes on a machine without
    CUDA run on the CPU over gloo."""
    import os

    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    if not cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # launched as several processes (accelerate launch --multi_gpu, torchrun) on a machine
        # without GPUs: run them on the CPU, synchronised over gloo
        cpu = True
    return Accelerator(gradient_accumulation_steps=grad_accum, mixed_precision=mixed_precision, cpu=cpu,
                       dataloader_config=DataLoaderConfiguration(split_batches=True),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def local_share(acc: Any, items: Sequence[Any]) -> tuple[list[Any], float]:
    """This process's consecutive share of the global batch ``items`` and its weight: 1, or 0 for a
    process left without examples (a last batch smaller than N): it runs the first example so that
    it joins the gradient all-reduce, and its loss is multiplied by 0."""
    with acc.split_between_processes(list(items)) as mine:
        mine = list(mine)
    return (mine, 1.0) if mine else (list(items[:1]), 0.0)


def active_processes(acc: Any, n_items: int) -> int:
    """How many processes get at least one of ``n_items`` examples from :func:`local_share`."""
    return max(1, min(acc.num_processes, n_items))


def all_sum(acc: Any, values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over the processes (float64; no communication for one)."""
    if acc.num_processes == 1:
        return [float(v) for v in values]
    import torch

    t = acc.reduce(torch.tensor([float(v) for v in values], dtype=torch.float64, device=acc.device), "sum")
    return [float(v) for v in t.cpu()]


def gather_rows(x: Any) -> Any:
    """All-gather the rows of ``x`` (``[n_p, ...]``, ``n_p`` may differ per process) in process
    order, keeping the autograd graph: the backward sends every process the gradient of its rows,
    summed over the processes' copies (``torch.distributed.nn.functional.all_gather``)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    pad = max(sizes) - x.shape[0]
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    parts = all_gather(x.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])
