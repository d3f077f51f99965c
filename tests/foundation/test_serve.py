import pytest

from unirag.corpus import read_corpus
from unirag.retrieval import build_index, load_retriever


@pytest.fixture
def client(tmp_path, corpus_jsonl, tiny_encoder_dir, tiny_llama_dir):
    from fastapi.testclient import TestClient

    from unirag.models import Generator
    from unirag.serve import create_app

    ix = build_index(read_corpus(corpus_jsonl), tmp_path / "ix", encoder=str(tiny_encoder_dir), progress=False)
    app = create_app({"dense": load_retriever(ix, "dense"), "bm25": load_retriever(ix, "bm25")},
                     generator=Generator.from_pretrained(str(tiny_llama_dir)))
    return TestClient(app)


def test_search_and_ask(client):
    assert client.get("/health").json() == {"status": "ok", "retrievers": ["bm25", "dense"], "passages": 6}
    r = client.post("/search", json={"query": "Leonardo da Vinci", "k": 2, "retriever": "bm25"}).json()
    assert r["hits"][0]["id"] == "p1" and r["hits"][0]["rank"] == 1
    a = client.post("/ask", json={"question": "Who painted it?", "k": 2, "max_new_tokens": 4}).json()
    assert len(a["sources"]) == 2 and {s["rank"] for s in a["sources"]} == {1, 2} and isinstance(a["answer"], str)


def test_bad_requests(client):
    assert client.post("/search", json={"query": "", "k": 2}).status_code == 422
    r = client.post("/search", json={"query": "x", "retriever": "hybrid"})
    assert r.status_code == 422 and "unknown retriever 'hybrid'" in r.json()["detail"]
