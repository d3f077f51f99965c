"""Run trainers in 2 processes with ``accelerate.debug_launcher`` (gloo on CPU) from a test.

``debug_launcher`` forks its processes. A process that has already run parallel torch kernels (its
OpenMP thread pool exists) must not fork: the children hang in their first parallel kernel. So the
tests run each stage in a fresh interpreter (``tests/train/runs.py``), and there the launcher forks
before anything is computed; the 1-process runs come before (another interpreter) or after it."""

from __future__ import annotations

from typing import Any, Callable


def _child(jobs: list[tuple[Callable[..., Any], tuple]]) -> None:
    import torch
    import torch.distributed as dist
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    torch.set_num_threads(1)
    for fn, args in jobs:
        fn(*args)
    if dist.is_initialized():
        dist.barrier()


def run_multi(jobs: list[tuple[Callable[..., Any], tuple]], num_processes: int = 2) -> None:
    """Run ``jobs`` one after another in ``num_processes`` processes (one process group)."""
    from accelerate import debug_launcher
    from accelerate.state import AcceleratorState

    debug_launcher(_child, args=(jobs,), num_processes=num_processes)
    AcceleratorState._reset_state(reset_partial_state=True)


def run_single(fn: Callable[..., Any], *args: Any) -> Any:
    """Run one job in this process, as one process (a fresh accelerate state)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return fn(*args)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
