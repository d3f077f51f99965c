"""The OpenAI-compatible endpoints, spoken to by the official ``openai`` client over a real server."""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest

import unirag
from tests.serve.conftest import KEY, live
from unirag.serve import ServeConfig, create_app

openai = pytest.importorskip("openai")

Q = "Who painted the Mona Lisa portrait?"


@pytest.fixture(scope="module")
def server(rag, closed_book):
    cfg = ServeConfig(api_key=KEY, max_batch=4, batch_wait_ms=30, max_tokens=64, max_k=5, max_body_bytes=20_000)
    app = create_app({"pipeline": rag, "closed-book": closed_book}, cfg)
    with live(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=30)


def test_models_and_info(server, client):
    assert sorted(m.id for m in client.models.list()) == ["unirag-closed-book", "unirag-pipeline"]
    info = httpx.get(server[0] + "/info", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert info["ready"] and info["passages"] == 6 and info["index_name"] == "ix-a"
    assert [e["name"] for e in info["engines"]] == ["pipeline", "closed-book"] and info["generators"]


def test_completion_matches_the_door_and_cites_the_index(client, rag, index_a):
    # the tiny random model's greedy text is empty: seeded sampling gives text, and is repeatable
    r = client.chat.completions.create(model="unirag-pipeline", max_tokens=8, temperature=1.0, seed=5,
                                       messages=[{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": Q}])
    direct = rag.ask(Q, unirag.SamplingParams(max_new_tokens=8, temperature=1.0, seed=5))
    assert r.choices[0].message.content == direct.text and direct.text
    assert r.choices[0].finish_reason == direct.finish_reason == "length"
    assert r.usage.completion_tokens == direct.usage.completion_tokens == 8
    cites = r.model_extra["citations"]
    assert [c["id"] for c in cites] == direct.source_ids and [c["number"] for c in cites] == [1, 2]
    store = {h.id: h for h in rag.search(Q, k=6)}
    for c in cites:  # each citation is a passage of the served index
        assert c["id"].startswith("a-") and c["snippet"] == store[c["id"]].text and c["title"] == store[c["id"]].title
        assert c["meta"]["topic"] and isinstance(c["score"], float)


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 3}])
def test_stream_concatenates_to_the_completion(server, client, sampling):
    kw = dict(model="unirag-pipeline", max_tokens=12, messages=[{"role": "user", "content": Q}], **sampling)
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content and (text or not sampling)
    retrievals = [c.model_extra["unirag"] for c in chunks if (c.model_extra or {}).get("unirag")]
    assert retrievals[0]["type"] == "retrieval" and retrievals[0]["step"] is None
    assert [s["id"] for s in retrievals[0]["sources"]] == [c["id"] for c in full.model_extra["citations"]]
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].model_extra["citations"] == full.model_extra["citations"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    # the wire: data lines, [DONE] last
    with httpx.stream("POST", server[0] + "/v1/chat/completions", json=kw | {"stream": True},
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_closed_book_and_params(client, closed_book):
    r = client.chat.completions.create(model="unirag-closed-book", max_completion_tokens=5, temperature=0.7,
                                       top_p=0.9, seed=2, stop=["zzz"], messages=[{"role": "user", "content": Q}])
    assert r.model_extra["citations"] == [] and r.usage.completion_tokens <= 5
    p = unirag.SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=2, stop=["zzz"])
    assert r.choices[0].message.content == closed_book.ask(Q, p).text


def test_concurrent_requests_keep_their_own_params(client, rag):
    """Requests batched together keep their own max_tokens, sampling and seed."""
    qs = ["largest planet", "a German composer", "river in Africa", Q]
    params = [unirag.SamplingParams(max_new_tokens=8), unirag.SamplingParams(max_new_tokens=6, temperature=1.0, seed=11),
              unirag.SamplingParams(max_new_tokens=5, temperature=1.0, seed=12), unirag.SamplingParams(max_new_tokens=3)]
    out: dict[int, object] = {}

    def go(i):
        p = params[i]
        out[i] = client.chat.completions.create(model="unirag-pipeline", max_tokens=p.max_new_tokens,
                                                temperature=p.temperature, seed=p.seed,
                                                messages=[{"role": "user", "content": qs[i]}])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        alone = rag.ask(qs[i], params[i])
        assert out[i].choices[0].message.content == alone.text
        assert out[i].usage.completion_tokens == alone.usage.completion_tokens


def test_extra_body_k_and_stop(client):
    r = client.chat.completions.create(model="unirag-pipeline", max_tokens=6, extra_body={"k": 3, "top_k": 5},
                                       messages=[{"role": "user", "content": Q}])
    assert len(r.model_extra["citations"]) == 3


def test_embeddings(client, rag):
    from unirag.serve.app import dense_retriever

    want = dense_retriever(rag).embed_queries(["Mona Lisa", "Jupiter"])
    r = client.embeddings.create(model="unirag-pipeline", input=["Mona Lisa", "Jupiter"])  # base64 on the wire
    got = np.array([d.embedding for d in r.data])
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-6) and r.usage.prompt_tokens > 0
    one = client.embeddings.create(model="unirag-pipeline", input="Mona Lisa", encoding_format="float")
    assert np.allclose(one.data[0].embedding, want[0], atol=1e-6)


def test_auth(server):
    url = server[0]
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = httpx.post(url + "/v1/chat/completions", json={"model": "unirag-pipeline", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/health").status_code == 200 and httpx.get(url + "/ready").status_code == 200
    assert httpx.get(url + "/metrics").status_code == 401


def test_errors_are_json_and_name_the_field(server, client):
    url, auth = server[0], {"Authorization": f"Bearer {KEY}"}
    msgs = [{"role": "user", "content": Q}]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=msgs)
    assert e.value.body["code"] == "model_not_found" and "gpt-4" in e.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="unirag-pipeline", messages=msgs, extra_body={"k": 50})
    assert e.value.body["param"] == "k" and "max_k" in e.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="unirag-pipeline", messages=msgs, max_tokens=10_000)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="unirag-pipeline", messages=msgs, temperature=9)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="unirag-pipeline", messages=msgs, extra_body={"no_repeat_ngram": -1})
    assert e.value.body["param"] == "no_repeat_ngram"
    plain, banned = (client.chat.completions.create(model="unirag-pipeline", messages=msgs, max_tokens=40, temperature=0,
                                                    extra_body=extra).choices[0].message.content
                     for extra in ({}, {"no_repeat_ngram": 2}))
    assert plain != banned  # the setting reaches the decoder (the tiny model loops without it)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="unirag-pipeline", messages=[{"role": "user", "content": "x" * 5000}])
    assert e.value.body["param"] == "messages" and "max_question_chars" in e.value.body["message"]
    r = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers=auth | {"content-type": "application/json"})
    assert r.status_code == 422 and set(r.json()["error"]) >= {"message", "type", "code"}
    r = httpx.post(url + "/v1/chat/completions", json={"model": "unirag-pipeline", "messages": msgs * 400}, headers=auth)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]
    r = httpx.get(url + "/nowhere", headers=auth)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.post(url + "/search", json={"query": "x", "k": 0}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["param"] == "k"
