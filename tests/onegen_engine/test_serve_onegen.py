"""The OneGen engine behind the OpenAI-compatible server: each retrieval streams as it happens,
with the generation step at which the query token was emitted; the citations carry the steps."""

from __future__ import annotations

import json

import httpx
import pytest

import unirag
from tests.serve.conftest import live
from unirag.serve import ServeConfig, create_app

Q = "Where is the Eiffel Tower?"


@pytest.fixture(scope="module")
def url(eager_onegen_dir, eager_index_dir):
    rag = unirag.RAG.load(eager_index_dir, engine="onegen", model=eager_onegen_dir, progress=False)
    with live(create_app({"onegen": rag}, ServeConfig(max_tokens=32))) as u:
        yield u, rag


def test_streamed_retrievals_carry_their_steps(url):
    base, rag = url
    body = {"model": "unirag-onegen", "messages": [{"role": "user", "content": Q}], "max_tokens": 6,
            "stream": True, "max_retrievals": 2}
    events = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    retrievals = [e["unirag"] for e in events if e.get("unirag", {}).get("type") == "retrieval"]
    direct = rag.ask(Q, unirag.SamplingParams(max_new_tokens=6))
    # the eager model emits the query token at its first steps, until its budget (default 4) is spent
    assert [r["step"] for r in retrievals] == [s.step for s in direct.sources] == [0, 1, 2, 3]
    assert [s["id"] for r in retrievals for s in r["sources"]] == direct.source_ids
    final = [e for e in events if e.get("choices") and e["choices"][0].get("finish_reason")][-1]
    assert [(c["id"], c["step"]) for c in final["citations"]] == [(s.id, s.step) for s in direct.sources]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert text == direct.text


def test_non_streamed_matches_the_door(url):
    base, rag = url
    r = httpx.post(base + "/v1/chat/completions", json={"model": "unirag-onegen", "max_tokens": 6,
                                                        "messages": [{"role": "user", "content": Q}]}, timeout=60)
    assert r.status_code == 200, r.text
    direct = rag.ask(Q, unirag.SamplingParams(max_new_tokens=6))
    data = r.json()
    assert data["choices"][0]["message"]["content"] == direct.text
    assert [c["step"] for c in data["citations"]] == [s.step for s in direct.sources]
