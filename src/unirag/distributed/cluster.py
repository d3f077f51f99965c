"""Joining or starting a Ray cluster, and the clear error when Ray is not installed."""

from __future__ import annotations

import os
from typing import Any

RayAddress = "str | bool | None"


def require_ray() -> Any:
    """``import ray``, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("distributed embedding and sharded search need Ray: pip install 'unirag[ray]' "
                          "(or pip install 'ray[data]')") from exc
    return ray


def connect(address: str | bool | None = True, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to a Ray cluster; returns whether this call started it
    (the caller then shuts it down when done).

    ``address``: ``True`` / ``None`` / ``""`` join the cluster named by ``$RAY_ADDRESS`` or else start a
    local one (``num_cpus`` CPUs, no dashboard); a string is a cluster address (``auto``,
    ``HOST:6379``, ``ray://HOST:10001``). An already connected process keeps its cluster."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    import logging

    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if isinstance(address, str) and address:
        ray.init(address=address, **kwargs)
        return True
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)
        return True
    ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **kwargs)
    return True


def disconnect(started: bool) -> None:
    """Shut Ray down if :func:`connect` started it."""
    if started:
        require_ray().shutdown()
