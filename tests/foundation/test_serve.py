import time

import pytest

import unirag
from unirag.retrieval import build_index, load_retriever


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_encoder_dir, tiny_llama_dir):
    from fastapi.testclient import TestClient

    from tests.conftest import PASSAGES
    from unirag.corpus import Passage
    from unirag.serve import create_app

    docs = [Passage(p["id"], p["text"], p["title"]) for p in PASSAGES]
    ix = build_index(docs, tmp_path_factory.mktemp("serve") / "ix", encoder=str(tiny_encoder_dir), progress=False)
    rag = unirag.RAG.load(ix, engine="pipeline", generator=str(tiny_llama_dir), progress=False)
    with TestClient(create_app(rag)) as client:  # the lifespan loads the engines in the background
        t0 = time.monotonic()
        while client.get("/ready").status_code != 200:
            assert time.monotonic() - t0 < 30
            time.sleep(0.02)
        yield client, rag, ix


def test_search_and_ask(served):
    client, rag, ix = served
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["engines"][0]["name"] == "pipeline" and info["passages"] == 6 and info["index"] == str(ix)
    r = client.post("/search", json={"query": "Leonardo da Vinci", "k": 2}).json()
    expect = load_retriever(ix, "dense").search(["Leonardo da Vinci"], 2)
    assert [h["id"] for h in r["hits"]] == expect.ids[0] and [h["number"] for h in r["hits"]] == [1, 2]
    a = client.post("/ask", json={"question": "Who painted it?", "k": 2, "max_new_tokens": 4}).json()
    direct = rag.ask("Who painted it?", unirag.SamplingParams(max_new_tokens=4, k=2))
    assert a["answer"] == direct.text and a["schema"] == "unirag-answer/1"  # greedy: the door's own answer
    assert [s["id"] for s in a["sources"]] == direct.source_ids and len(a["sources"]) == 2
    assert a["usage"]["completion_tokens"] == 4


def test_bad_requests(served):
    client = served[0]
    assert client.post("/search", json={"query": "", "k": 2}).status_code == 422
    r = client.post("/search", json={"query": "x", "k": 0})
    assert r.status_code == 422 and r.json()["error"]["param"] == "k"
    r = client.post("/ask", json={"question": "x", "max_new_tokens": 5000})
    assert r.status_code == 422 and r.json()["error"]["param"] == "max_new_tokens"
