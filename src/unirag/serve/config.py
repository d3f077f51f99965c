"""``ServeConfig``: every setting of the HTTP server, typed, checked before any model loads."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from unirag.config.base import ConfigBase, ConfigError
from unirag.models.registry import DEFAULT_GENERATOR

MODEL_PREFIX = "unirag-"


def model_id(engine: str) -> str:
    """The OpenAI ``model`` name of an engine (``pipeline`` -> ``unirag-pipeline``)."""
    return MODEL_PREFIX + engine


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it reaches the network


@dataclass
class ServeConfig(ConfigBase):
    """Settings of ``unirag serve`` / :func:`unirag.serve.create_app`.

    Models: ``engines`` (each served as model ``unirag-<engine>``), ``index``, ``retriever``,
    ``generator``, ``dtype``, ``model`` as in :class:`unirag.LoadConfig`; ``per_engine`` overrides ``index`` /
    ``model`` for one engine (``{"onegen": {"index": "...", "model": "..."}}``); ``index`` applies to
    the pipeline and RAG engines, OneGen uses its model's own index unless ``per_engine`` names one.

    Safety: ``host`` is loopback by default; any other address needs ``api_key`` (Bearer token).
    ``cors``: allowed browser origins (none: CORS off). Limits (a request over one gets 413 / 422
    naming it): ``max_body_bytes``, ``max_question_chars``, ``max_k``, ``max_tokens``;
    ``max_inputs`` texts per embeddings request. ``default_max_tokens`` when a request names none.

    Scheduling: each generating engine has a worker thread; ``max_queue`` requests may wait (more:
    429), the worker decodes up to ``max_batch`` together, waiting ``batch_wait_ms`` for a batch to
    fill; with ``continuous`` requests that arrive meanwhile join the running batch between decoding
    steps. ``request_timeout_s``: a request that waits and runs longer is cancelled (504).

    ``hops``: retrievals per question of the pipeline engine (1: single-shot; a request's ``hops``
    overrides it, up to ``max_hops``); ``hop_mode`` and ``plan_examples``: how it chooses its searches
    (:class:`unirag.LoadConfig`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    engines: list[str] = field(default_factory=lambda: ["pipeline"])
    index: str | None = None
    retriever: str = "dense"
    generator: str = DEFAULT_GENERATOR
    dtype: str | None = None
    model: str | None = None
    per_engine: dict[str, dict[str, str]] = field(default_factory=dict)
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 32
    batch_wait_ms: float = 10.0
    continuous: bool = True
    hops: int = 1
    max_hops: int = 4
    hop_mode: str = "plan"
    plan_examples: str | None = None
    max_body_bytes: int = 1_000_000
    max_question_chars: int = 4000
    max_k: int = 20
    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_inputs: int = 256
    cors: list[str] = field(default_factory=list)
    request_timeout_s: float = 300.0

    def validate(self) -> ServeConfig:
        """Raise :class:`ConfigError` naming the first bad setting (nothing is loaded)."""
        from unirag.api.rag import engine_name

        if not self.engines:
            raise ConfigError("engines: give at least one engine")
        self.engines = list(dict.fromkeys(engine_name(e.strip()) for e in self.engines))
        for name in self.per_engine:
            if engine_name(name) not in self.engines:
                raise ConfigError(f"per_engine: {name!r} is not one of the served engines {self.engines}")
        for name, value, least in (("port", self.port, 0), ("max_batch", self.max_batch, 1), ("hops", self.hops, 1), ("max_hops", self.max_hops, 1),
                                   ("max_queue", self.max_queue, 1), ("max_body_bytes", self.max_body_bytes, 1),
                                   ("max_question_chars", self.max_question_chars, 1), ("max_k", self.max_k, 1),
                                   ("max_tokens", self.max_tokens, 1), ("default_max_tokens", self.default_max_tokens, 1),
                                   ("max_inputs", self.max_inputs, 1)):
            if value < least:
                raise ConfigError(f"{name} = {value}: must be >= {least}")
        if self.port > 65535:
            raise ConfigError(f"port = {self.port}: must be <= 65535")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"batch_wait_ms = {self.batch_wait_ms}: must be >= 0")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"request_timeout_s = {self.request_timeout_s}: must be > 0")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key: must not be empty")
        if not is_loopback(self.host) and not self.api_key:
            raise ConfigError(f"host {self.host!r} is not a loopback address: binding it needs an API key "
                              "(--api-key or UNIRAG_API_KEY), so that the network cannot use the server freely")
        for origin in self.cors:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(f"cors: {origin!r} is not an origin like https://example.org (or *)")
        return self

    def load_config(self, engine: str):
        """The :class:`unirag.LoadConfig` of one served engine (checked; nothing is loaded)."""
        from unirag.api.rag import LoadConfig

        over = self.per_engine.get(engine, {})
        # a plain index holds a sentence encoder's vectors: OneGen reads its own index unless told
        index = over.get("index", None if engine == "onegen" else self.index)
        model = over.get("model", self.model)
        return LoadConfig(engine, index, self.generator, self.retriever, model,
                          hops=self.hops if engine == "pipeline" else 1, dtype=self.dtype,
                          **({"hop_mode": self.hop_mode, "plan_examples": self.plan_examples}
                             if engine == "pipeline" else {})).validate()
