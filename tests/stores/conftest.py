"""Session fixtures: one real PostgreSQL + pgvector server and one real Milvus server, started on
first use and stopped at the end; a test that needs one is skipped (with the reason) only where the
server cannot start here (package missing, binary does not run, no network namespace for Milvus)."""

from __future__ import annotations

import contextlib

import pytest

from tests.stores.servers import ServerUnavailable, milvus_server, pgvector_server


def _server(request, starter):
    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(starter())
    except ServerUnavailable as exc:
        pytest.skip(f"{starter.__name__.replace('_server', '')} server unavailable: {exc}")
    request.addfinalizer(stack.close)
    return server


@pytest.fixture(scope="session")
def pg_server(request):
    return _server(request, pgvector_server)


@pytest.fixture(scope="session")
def milvus(request):
    return _server(request, milvus_server)


_counter = iter(range(10**6))


@pytest.fixture(params=["pgvector", "milvus"])
def store_uri(request):
    """A fresh table / collection URI on each real server (dropped after the test)."""
    n = next(_counter)
    if request.param == "pgvector":
        server = request.getfixturevalue("pg_server")
        uri = f"{server.uri}&table=t{n}"
    else:
        server = request.getfixturevalue("milvus")
        uri = f"{server.uri}/c{n}"
    yield uri
    from unirag.index.store import parse_store_uri

    with contextlib.suppress(Exception):
        from unirag.index.store import _backend

        spec = parse_store_uri(uri)
        store = _backend(spec.kind).connect(spec)
        store.drop()
        store.close()
