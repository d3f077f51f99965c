"""Concurrent /search requests answered by one search: batching order, errors, keys, and the live
server's answers equal one-at-a-time searches."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

import unirag
from tests.serve.conftest import live
from unirag.serve import ServeConfig, create_app
from unirag.serve.search_batch import SearchBatcher


def _run_in_threads(fn, args_list):
    out, threads = {}, []
    for i, args in enumerate(args_list):
        def go(i=i, args=args):
            try:
                out[i] = ("ok", fn(*args))
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                out[i] = ("error", exc)

        threads.append(threading.Thread(target=go))
    for t in threads:
        t.start()
    return out, threads


def test_requests_queued_behind_a_search_run_as_one_batch():
    gate, started = threading.Event(), threading.Event()
    batches = []

    def run(queries):
        batches.append(list(queries))
        if len(batches) == 1:  # the first search holds the key while the others arrive
            started.set()
            assert gate.wait(10)
        return [q.upper() for q in queries]

    b = SearchBatcher(max_batch=4)
    first, t0 = _run_in_threads(lambda q: b.search("k", q, run), [("a",)])
    assert started.wait(10)
    rest, ts = _run_in_threads(lambda q: b.search("k", q, run), [(q,) for q in "bcdefg"])
    deadline = time.monotonic() + 10
    while sum(len(v) for v in b._queues.values()) < 6:  # all six queued behind the first
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gate.set()
    for t in t0 + ts:
        t.join(10)
    assert first[0] == ("ok", "A") and {rest[i][1] for i in rest} == set("BCDEFG")
    assert [len(x) for x in batches] == [1, 4, 2]  # max_batch caps a batch; the rest run next
    assert sorted(sum(batches[1:], [])) == list("bcdefg") and not b._queues and not b._busy


def test_an_error_reaches_every_request_of_its_batch_only_and_keys_stay_apart():
    gate, started = threading.Event(), threading.Event()
    seen = []

    def run(queries):
        seen.append(tuple(queries))
        if len(seen) == 1:
            started.set()
            assert gate.wait(10)
            return ["first"]
        if "bad" in queries:
            raise ValueError("index gone")
        return [f"{q}!" for q in queries]

    b = SearchBatcher(max_batch=8)
    out0, t0 = _run_in_threads(lambda q: b.search("x", q, run), [("a",)])
    assert started.wait(10)
    out1, t1 = _run_in_threads(lambda q: b.search("x", q, run), [("bad",), ("c",)])
    out2, t2 = _run_in_threads(lambda q: b.search("y", q, run), [("d",)])  # another key: not held up
    for t in t2:
        t.join(10)
    assert out2[0] == ("ok", "d!")
    while sum(len(v) for v in b._queues.values()) < 2:
        time.sleep(0.01)
    gate.set()
    for t in t0 + t1:
        t.join(10)
    assert out0[0] == ("ok", "first")
    assert [kind for kind, _ in out1.values()] == ["error", "error"]
    assert all(isinstance(e, ValueError) for _, e in out1.values())
    assert b.search("x", "e", run) == "e!"  # the batcher serves on after an error
    with pytest.raises(ValueError, match="max_batch"):
        SearchBatcher(max_batch=0)


def test_live_concurrent_searches_equal_single_ones(index_a):
    rag = unirag.RAG.load(index_a, engine="pipeline", generator=None, progress=False)
    queries = ["the largest planet", "a painter of the renaissance", "penicillin", "rivers of Egypt", "a composer"]
    want = {q: [h.id for h in rag.search(q, 3)] for q in queries}
    orig, calls = rag.engine.search, []

    def slow_first(qs, k):  # the first search takes a while, so the others queue behind it
        calls.append(len(qs))
        if len(calls) == 1:
            time.sleep(0.5)
        return orig(qs, k)

    rag.engine.search = slow_first
    app = create_app({"pipeline": rag}, ServeConfig())
    with live(app) as url:
        got = {}

        def ask(q):
            with httpx.Client(base_url=url, timeout=30) as c:
                got[q] = [h["id"] for h in c.post("/search", json={"query": q, "k": 3}).json()["hits"]]

        first = threading.Thread(target=ask, args=(queries[0],))
        first.start()
        while not calls:
            time.sleep(0.01)
        rest = [threading.Thread(target=ask, args=(q,)) for q in queries[1:]]
        for t in rest:
            t.start()
        for t in [first, *rest]:
            t.join(30)
        assert got == want
        m = app.state.unirag.metrics
        assert m.value("unirag_search_batch_size_sum", engine="pipeline") == len(queries)
        assert m.value("unirag_search_batch_size_count", engine="pipeline") == len(calls) < len(queries)
