"""Prometheus metrics of one app (a registry of its own, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Requests by route and status, latency, tokens generated, queue depth, batch sizes."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("unirag_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("unirag_request_seconds", "HTTP request latency (streams: until the last byte)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.generated = Counter("unirag_generated_tokens", "Tokens generated, by engine", ["engine"], registry=r)
        self.queue_depth = Gauge("unirag_queue_depth", "Requests waiting for an engine's worker", ["engine"],
                                 registry=r)
        self.running = Gauge("unirag_running_requests", "Requests decoding now", ["engine"], registry=r)
        self.batch_size = Histogram("unirag_batch_size", "Requests decoded together", ["engine"],
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.search_batch_size = Histogram("unirag_search_batch_size", "/search requests answered by one search",
                                           ["engine"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r)
        self.rejected = Counter("unirag_rejected_requests", "Requests refused because a queue was full",
                                ["engine"], registry=r)
        self.cancelled = Counter("unirag_cancelled_requests", "Requests cancelled (client gone or timeout)",
                                 ["engine", "reason"], registry=r)

    def watch(self, engine: str, depth: Callable[[], int], running: Callable[[], int]) -> None:
        """Report an engine's queue depth and running requests when scraped."""
        self.queue_depth.labels(engine).set_function(depth)
        self.running.labels(engine).set_function(running)

    def tokens(self, engine: str, n: int) -> None:
        """Count generated tokens (from the worker thread)."""
        if n:
            self.generated.labels(engine).inc(n)

    def batch(self, engine: str, size: int) -> None:
        """Record the size of a batch the worker starts."""
        self.batch_size.labels(engine).observe(size)

    def search_batch(self, engine: str, size: int) -> None:
        """Record how many /search requests one search answers."""
        self.search_batch_size.labels(engine).observe(size)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, **labels: Any) -> float:
        """A sample's current value (tests), e.g. ``value("unirag_generated_tokens_total", engine="pipeline")``."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v
