"""The real default pipeline end to end: packaged encoder, generator and Wikipedia corpus.

Slow: the first run builds the default index (about 4-9 minutes on 2 cores), later runs reuse it.
"""

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_index():
    from unirag.retrieval import ensure_default_index

    return ensure_default_index(progress=False)


def test_fanoutqa_dense_recall_reproduces(default_index):
    from unirag.eval import evaluate_retrieval, fanoutqa_retrieval_queries
    from unirag.retrieval import load_retriever

    queries = fanoutqa_retrieval_queries()
    assert len(queries) == 558
    dense = evaluate_retrieval(load_retriever(default_index, "dense"), queries, ks=(1, 5, 20))
    assert abs(dense["recall@1"] - 0.74) <= 0.02, dense
    assert abs(dense["recall@5"] - 0.93) <= 0.02, dense
    bm25 = evaluate_retrieval(load_retriever(default_index, "bm25"), queries, ks=(1, 5, 20))
    assert 0.45 <= bm25["recall@1"] < dense["recall@1"], bm25


def test_ask_mona_lisa_cites_the_painting(default_index):
    import unirag
    from unirag.outputs import TextDelta

    rag = unirag.RAG.load(default_index, engine="pipeline", progress=False)
    params = unirag.SamplingParams(max_new_tokens=96)
    answer = rag.ask("Who painted the Mona Lisa?", params)
    assert "Leonardo" in answer.text, answer.text
    assert answer.sources[0].id == "Mona Lisa"
    streamed = "".join(e.text for e in rag.stream("Who painted the Mona Lisa?", params) if isinstance(e, TextDelta))
    assert streamed.strip() == answer.text  # streaming yields the same greedy answer
