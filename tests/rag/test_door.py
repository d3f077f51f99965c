"""The door over classic RAG: ``RAG.load(engine="rag-token" | "rag-sequence", model=...)``; the
``Answer`` carries the model's own retrieval, priors, posteriors and RAG-Token spans."""

from __future__ import annotations

import pytest

import unirag
from tests.rag.conftest import make_rag
from unirag.outputs import Finished, RetrievalEvent, TextDelta

QS = ["what is the capital of France", "what is the capital of Germany", "what is the capital of Italy",
      "which capital is known for music"]


@pytest.fixture(scope="module")
def saved(tiny_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rag") / "model"
    make_rag("causal", tiny_index[0]).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("engine,decoding", [("rag-token", None), ("rag-token", "beam"),
                                              ("rag-sequence", None), ("rag-sequence", "fast")])
def test_answer_matches_the_model(saved, tiny_index, engine, decoding):
    rag = unirag.RAG.load(tiny_index[0], engine=engine, model=saved, decoding=decoding, num_beams=2,
                          progress=False)
    params = unirag.SamplingParams(max_new_tokens=5)
    ans = rag.ask(QS[0], params)
    variant = engine.split("-")[1]
    model = rag.engine.model.eval()
    direct = model.generate([QS[0]], variant=variant, decoding=decoding or ("greedy" if variant == "token"
                                                                             else "thorough"),
                            num_beams=2, max_new_tokens=5)[0]
    assert ans.text == direct.answer and ans.engine == engine
    assert ans.source_ids == [p.id for p in direct.passages] == ans.trace[0].used
    assert [s.prob for s in ans.sources] == pytest.approx(direct.doc_posterior)
    assert [s.meta["prior"] for s in ans.sources] == pytest.approx(direct.doc_prior)
    assert [s.score for s in ans.sources] == pytest.approx(model.retrieve([QS[0]]).doc_scores[0].tolist(), abs=1e-5)
    assert ans.usage.completion_tokens == len(direct.tokens) and ans.usage.prompt_tokens == direct.context_tokens
    if variant == "token":  # RAG-Token: every attributed span lands on the source it came from
        spans = [(sp.text, k) for k, s in enumerate(ans.sources) for sp in s.spans]
        assert sorted(spans) == sorted((sp.text.strip(), sp.doc) for sp in direct.spans)
        for s in ans.sources:
            for sp in s.spans:
                assert sp.start < 0 or ans.text[sp.start:sp.end] == sp.text


def test_batch_stream_and_seeded_sampling(saved, tiny_index):
    rag = unirag.RAG.load(tiny_index[0], engine="rag", model=saved, progress=False)
    params = unirag.SamplingParams(max_new_tokens=5)
    batch = rag.ask_batch(QS, params, batch_size=4)
    assert [a.text for a in batch] == [rag.ask(q, params).text for q in QS]
    events = list(rag.stream(QS[1], params))
    assert isinstance(events[0], RetrievalEvent) and isinstance(events[-1], Finished)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == batch[1].text
    sample = params.with_(temperature=1.0, seed=5)
    assert rag.ask(QS[0], sample).text == rag.ask(QS[0], sample).text
    assert len({rag.ask(QS[0], sample.with_(seed=s)).text for s in range(6)}) > 1


def test_swap_and_search(saved, tiny_index):
    rag = unirag.RAG.load(tiny_index[0], engine="rag-token", model=saved, progress=False)
    before = {h.id: h.text for h in rag.search(QS[0], k=10)}
    rag.swap_index(tiny_index[1])
    after = {h.id: h.text for h in rag.search(QS[0], k=10)}
    assert "Paris is" in before["Paris"] and "Amsterdam is" in after["Paris"]


def test_wrong_decoding_is_refused_before_loading(tiny_index):
    from unirag.config import ConfigError

    with pytest.raises(ConfigError, match="thorough"):
        unirag.RAG.load(tiny_index[0], engine="rag-sequence", decoding="greedy")
