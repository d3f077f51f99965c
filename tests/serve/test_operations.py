"""Start-up, readiness, back-pressure, cancellation, hot swap, the bind-address guard, CORS."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

import unirag
from tests.serve.conftest import KEY, Slow, live, wait_ready, make_index
from unirag.config import ConfigError
from unirag.serve import ServeConfig, create_app

MSG = [{"role": "user", "content": "Who painted the Mona Lisa?"}]


def test_ready_only_after_loading(rag):
    gate = threading.Event()

    def loader():
        gate.wait(20)
        return {"pipeline": rag}

    with live(create_app(loader, ServeConfig()), ready=False) as url:
        assert httpx.get(url + "/health").json() == {"status": "ok"}
        r = httpx.get(url + "/ready")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready" and r.headers["retry-after"]
        r = httpx.post(url + "/v1/chat/completions", json={"model": "unirag-pipeline", "messages": MSG})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert httpx.get(url + "/info").json()["ready"] is False
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["unirag-pipeline"]
        gate.set()
        wait_ready(url, 10)
        r = httpx.post(url + "/v1/chat/completions", json={"model": "unirag-pipeline", "messages": MSG, "max_tokens": 3})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_a_failed_load_is_reported_by_ready():
    def loader():
        raise FileNotFoundError("no index here")

    with live(create_app(loader, ServeConfig()), ready=False) as url:
        t0 = time.monotonic()
        while (r := httpx.get(url + "/ready")).json()["status"] == "loading":
            assert time.monotonic() - t0 < 10
            time.sleep(0.02)
        assert r.status_code == 503 and "no index here" in r.json()["error"]["message"]


def test_full_queue_answers_429(rag):
    app = create_app({"pipeline": Slow(rag, 0.02)}, ServeConfig(max_batch=1, max_queue=1, batch_wait_ms=0))
    with live(app) as url:
        codes, bodies = [], []

        def go():
            r = httpx.post(url + "/v1/chat/completions", timeout=30,
                           json={"model": "unirag-pipeline", "messages": MSG, "max_tokens": 30})
            codes.append(r.status_code)
            bodies.append((r.headers, r.json()))

        threads = [threading.Thread(target=go) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.05)  # the first is decoding, the second waits, the rest find the queue full
        for t in threads:
            t.join()
        assert codes.count(200) >= 2 and codes.count(429) >= 1
        headers, body = next(b for c, b in zip(codes, bodies) if c == 429)
        assert headers["retry-after"] and body["error"]["code"] == "queue_full"
        assert app.state.unirag.metrics.value("unirag_rejected_requests_total", engine="pipeline") >= 1


def test_client_disconnect_stops_generation(rag):
    app = create_app({"pipeline": Slow(rag, 0.02)}, ServeConfig(max_tokens=200))
    metrics = app.state.unirag.metrics

    def tokens():
        return metrics.value("unirag_generated_tokens_total", engine="pipeline")

    with live(app) as url:
        for stream in (True, False):
            before = tokens()
            body = {"model": "unirag-pipeline", "messages": MSG, "max_tokens": 200, "stream": stream}
            if stream:
                with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
                    for line in r.iter_lines():
                        if '"retrieval"' in line:
                            break  # leave once generation is under way
                time.sleep(0.3)
                assert tokens() > before  # it was decoding
            else:
                with pytest.raises(httpx.ReadTimeout):
                    httpx.post(url + "/v1/chat/completions", json=body, timeout=0.6)
            t0 = time.monotonic()
            while metrics.value("unirag_cancelled_requests_total", engine="pipeline", reason="disconnect") < (
                    1 if stream else 2):
                assert time.monotonic() - t0 < 5, "the server did not notice the client leave"
                time.sleep(0.02)
            time.sleep(0.2)
            stopped = tokens()
            time.sleep(0.4)
            assert tokens() == stopped < before + 100  # no longer rising, far from 200
        text = httpx.get(url + "/metrics").text
        assert "unirag_generated_tokens_total" in text and "unirag_batch_size" in text
        assert 'unirag_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text


@pytest.mark.parametrize("continuous", [True, False])
def test_a_request_joins_the_running_batch(rag, continuous):
    """Continuous batching: a short request sent while a long one decodes joins its batch and
    finishes first, with the text it gets alone; without it, it waits for the long one to end."""
    app = create_app({"pipeline": Slow(rag, 0.03)}, ServeConfig(max_batch=4, continuous=continuous))
    short_q = "a German composer"
    with live(app) as url:
        done: dict[str, float] = {}
        texts: dict[str, str] = {}

        def go(name, question, max_tokens):
            r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
                "model": "unirag-pipeline", "max_tokens": max_tokens, "messages": [{"role": "user", "content": question}]})
            done[name] = time.monotonic()
            texts[name] = r.json()["choices"][0]["message"]["content"]

        long = threading.Thread(target=go, args=("long", "Who painted the Mona Lisa?", 60))
        long.start()
        metrics = app.state.unirag.metrics
        t0 = time.monotonic()
        while metrics.value("unirag_generated_tokens_total", engine="pipeline") < 5:  # the long one decodes
            assert time.monotonic() - t0 < 20
            time.sleep(0.01)
        go("short", short_q, 3)
        long.join()
    assert texts["short"] == rag.ask(short_q, unirag.SamplingParams(max_new_tokens=3)).text
    assert (done["short"] < done["long"]) is continuous


def test_hot_swap_under_concurrent_searches(index_a, index_b):
    search_only = unirag.RAG.load(index_a, engine="pipeline", generator=None, progress=False)
    with live(create_app({"pipeline": search_only}, ServeConfig())) as url:
        stop, seen, bad = threading.Event(), set(), []

        def searcher():
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    hits = c.post("/search", json={"query": "the largest planet", "k": 4}).json()["hits"]
                    prefixes = {h["id"][:2] for h in hits}
                    seen.update(prefixes)
                    if len(prefixes) != 1 or len(hits) != 4:
                        bad.append(hits)

        threads = [threading.Thread(target=searcher) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for i in range(6):
                target = index_b if i % 2 == 0 else index_a
                r = httpx.post(url + "/index/swap", json={"index": str(target)}, timeout=30)
                assert r.status_code == 200 and r.json()["swapped"] == ["pipeline"] and r.json()["passages"] == 6
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not bad and seen == {"a-", "b-"}
        assert httpx.get(url + "/info").json()["index"] == str(index_a)
        r = httpx.post(url + "/index/swap", json={"index": str(index_a) + "-missing"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "index"


def test_non_loopback_needs_a_key(rag, monkeypatch):
    with pytest.raises(ConfigError, match="api_key|API key"):
        ServeConfig(host="0.0.0.0").validate()
    with pytest.raises(ConfigError, match="API key"):
        create_app({"pipeline": rag}, ServeConfig(host="192.168.1.4"))
    ServeConfig(host="0.0.0.0", api_key=KEY).validate()
    ServeConfig(host="::1").validate()
    import uvicorn

    from unirag.cli.app import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.delenv("UNIRAG_API_KEY", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["serve", "--host", "0.0.0.0"])
    assert e.value.code == 2 and not calls
    with pytest.raises(SystemExit) as e:
        main(["serve", "--engine", "pipeline,foo"])
    assert e.value.code == 2 and not calls
    with pytest.raises(SystemExit) as e:  # options checked before anything loads: the app loads in the background
        main(["serve", "--host", "0.0.0.0", "--api-key", KEY, "--port", "0", "--cors", "http://localhost:3000"])
    assert e.value.code == 0 and calls == [{"host": "0.0.0.0", "port": 0, "log_level": "info"}]


def test_cors_is_off_unless_asked(rag):
    pre = {"Origin": "http://page.example", "Access-Control-Request-Method": "POST"}
    with live(create_app({"pipeline": rag}, ServeConfig())) as url:
        r = httpx.get(url + "/health", headers={"Origin": "http://page.example"})
        assert "access-control-allow-origin" not in r.headers
    with live(create_app({"pipeline": rag}, ServeConfig(api_key=KEY, cors=["http://page.example"]))) as url:
        r = httpx.options(url + "/v1/chat/completions", headers=pre | {"Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://page.example"
        r = httpx.get(url + "/info", headers={"Origin": "http://other.example", "Authorization": f"Bearer {KEY}"})
        assert "access-control-allow-origin" not in r.headers


def test_a_crash_is_a_json_500_without_a_trace(index_a):
    class Broken:
        params = unirag.SamplingParams()

        def info(self):
            return {"engine": "pipeline", "index": str(index_a), "passages": 6}

        def search(self, query, k):
            raise RuntimeError("secret internal detail")

        def stream_batch(self, questions, params, cancelled=None):
            raise RuntimeError("secret internal detail")
            yield

    with live(create_app({"pipeline": Broken()}, ServeConfig())) as url:
        r = httpx.post(url + "/search", json={"query": "x"})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert "secret" not in r.text and "Traceback" not in r.text
        r = httpx.post(url + "/v1/chat/completions", json={"model": "unirag-pipeline", "messages": MSG})
        assert r.status_code == 500 and r.json()["error"]["code"] == "generation_failed" and "secret" not in r.text


def test_serve_config_round_trips_and_names_bad_settings(tmp_path):
    cfg = ServeConfig(engines=["pipeline", "rag"], per_engine={"rag-token": {"model": "m"}}, cors=["http://a.example"])
    assert ServeConfig.load(cfg.save(tmp_path / "serve.yaml")) == cfg
    assert cfg.validate().engines == ["pipeline", "rag-token"]
    for bad, field in ((dict(max_batch=0), "max_batch"), (dict(engines=["nope"]), "engine"),
                       (dict(cors=["example.org"]), "cors"), (dict(port=70000), "port")):
        with pytest.raises(ConfigError, match=field):
            ServeConfig(**bad).validate()


def test_documents_added_are_found_and_deleted_ones_are_gone_everywhere(tmp_path, tiny_encoder_dir):
    from unirag.corpus import DocStore
    from unirag.index.folder import IndexFolder
    from unirag.retrieval import load_retriever

    folder = make_index(tmp_path / "live", tiny_encoder_dir, "l-")
    rag = unirag.RAG.load(folder, engine="pipeline", generator=None, retriever="hybrid", progress=False)
    doc = {"id": "new-1", "title": "Zanzibar", "text": "Zanzibar spice markets sell cloves and nutmeg.", "topic": "x"}
    with live(create_app({"pipeline": rag}, ServeConfig())) as url:
        r = httpx.post(url + "/documents", json={"documents": [doc]}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["engines"]["pipeline"]["added"] == 1 and r.json()["engines"]["pipeline"]["passages"] == 7
        hits = httpx.post(url + "/search", json={"query": "Zanzibar cloves nutmeg", "k": 3}).json()["hits"]
        assert hits[0]["id"] == "new-1" and hits[0]["meta"]["topic"] == "x"
        for kind in ("dense", "bm25"):  # in every part of the folder the server now reads
            assert "new-1" in load_retriever(folder, kind).search(["Zanzibar cloves nutmeg"], 7).ids[0]
        r = httpx.delete(url + "/documents/new-1", timeout=60)
        assert r.status_code == 200 and r.json()["engines"]["pipeline"]["update"]["deleted"] == 1
        hits = httpx.post(url + "/search", json={"query": "Zanzibar cloves nutmeg", "k": 6}).json()["hits"]
        assert "new-1" not in {h["id"] for h in hits} and len(hits) == 6
        for kind in ("dense", "bm25"):
            assert "new-1" not in load_retriever(folder, kind).search(["Zanzibar cloves nutmeg"], 6).ids[0]
        store = DocStore(IndexFolder(folder).docs_dir)
        assert "new-1" not in store and len(store) == 6
        for f in folder.rglob("*"):
            assert not f.is_file() or b"Zanzibar" not in f.read_bytes(), f
        r = httpx.delete(url + "/documents/new-1", timeout=60)
        assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
        r = httpx.post(url + "/documents", json={"documents": [{"id": "x", "text": ""}]})
        assert r.status_code == 422 and "text" in r.json()["error"]["message"] + str(r.json()["error"].get("param"))


def test_multi_hop_per_request_and_its_limit(rag):
    with live(create_app({"pipeline": rag}, ServeConfig(max_hops=2))) as url:
        r = httpx.post(url + "/ask", timeout=60, json={"question": "Who painted the Mona Lisa?", "hops": 2,
                                                        "k": 2, "max_new_tokens": 4})
        assert r.status_code == 200
        body = r.json()
        # the plan loop ran (the default hop mode): hop 0 for the question, at most one planned name
        # (2 hops), then the question's ranking fills the budget: k + 1 name = 3 passages
        hops, trace = body["extra"]["hops"], body["trace"]
        assert trace[0]["query"] == "Who painted the Mona Lisa?" and 2 <= len(trace) <= 3
        assert [t["step"] for t in trace] == list(range(len(trace))) and hops["stopped"] in ("hops", "plan")
        assert len({s["id"] for s in body["sources"]}) == len(body["sources"]) == 3
        one = httpx.post(url + "/ask", json={"question": "Who painted the Mona Lisa?", "k": 2, "max_new_tokens": 4})
        assert len(one.json()["trace"]) == 1 and "hops" not in one.json().get("extra", {})
        r = httpx.post(url + "/v1/chat/completions", json={"model": "unirag-pipeline", "messages": MSG, "hops": 3})
        assert r.status_code == 422 and "max_hops" in r.json()["error"]["message"]
