"""A real uvicorn server on a free loopback port, in a background thread, over tiny models."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any

import pytest

import unirag

KEY = "test-key-0123"


@contextmanager
def live(app: Any, ready: bool = True, timeout: float = 30.0):
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port; yields the base URL."""
    import httpx
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while not server.started:
        assert time.monotonic() - t0 < timeout, "the server did not start"
        time.sleep(0.02)
    if ready:
        wait_ready(url, timeout)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_ready(url: str, timeout: float = 30.0) -> None:
    import httpx

    t0 = time.monotonic()
    while httpx.get(url + "/ready").status_code != 200:
        assert time.monotonic() - t0 < timeout, "the server did not become ready"
        time.sleep(0.02)


class Slow:
    """A RAG whose decoding steps take ``delay`` seconds more (a slow model, for queue and cancel
    tests): the pause is taken where the decoding loop asks whether a row is cancelled."""

    def __init__(self, rag: Any, delay: float):
        self.rag, self.delay = rag, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rag, name)

    def stream_batch(self, questions, params, cancelled=None, admit=None):
        def slow(i: int) -> bool:
            time.sleep(self.delay)
            return cancelled(i) if cancelled is not None else False

        return self.rag.stream_batch(questions, params, slow, admit)


def make_index(path, encoder, prefix: str):
    from tests.conftest import PASSAGES
    from unirag.corpus import Passage
    from unirag.retrieval import build_index

    docs = [Passage(prefix + p["id"], p["text"], p["title"], {"topic": p["topic"]}) for p in PASSAGES]
    return build_index(docs, path, encoder=str(encoder), progress=False)


@pytest.fixture(scope="session")
def index_a(tmp_path_factory, tiny_encoder_dir):
    return make_index(tmp_path_factory.mktemp("serve") / "ix-a", tiny_encoder_dir, "a-")


@pytest.fixture(scope="session")
def index_b(tmp_path_factory, tiny_encoder_dir):
    return make_index(tmp_path_factory.mktemp("serve") / "ix-b", tiny_encoder_dir, "b-")


@pytest.fixture(scope="session")
def rag(index_a, tiny_llama_dir):
    return unirag.RAG.load(index_a, engine="pipeline", generator=str(tiny_llama_dir), k=2, progress=False)


@pytest.fixture(scope="session")
def closed_book(tiny_llama_dir):
    return unirag.RAG.load(engine="closed-book", generator=str(tiny_llama_dir), progress=False)
