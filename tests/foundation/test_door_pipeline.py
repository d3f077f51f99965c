"""The door over the retrieve-then-read engine: ``RAG.load``, ``ask``, ``ask_batch``, ``stream``,
``search``, ``swap_index`` on a tiny random Llama and a tiny encoder's index."""

from __future__ import annotations

import json

import pytest

import unirag
from unirag.config import ConfigError
from unirag.corpus import read_corpus
from unirag.outputs import Finished, RetrievalEvent, TextDelta
from unirag.retrieval import build_index, load_retriever

QUESTIONS = ["who painted the portrait", "largest planet", "a German composer", "river in Africa"]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_encoder_dir):
    from tests.conftest import PASSAGES
    from unirag.corpus import Passage

    docs = [Passage(p["id"], p["text"], p["title"]) for p in PASSAGES]
    return build_index(docs, tmp_path_factory.mktemp("door") / "ix", encoder=str(tiny_encoder_dir), progress=False)


@pytest.fixture(scope="module")
def rag(index_dir, tiny_llama_dir):
    return unirag.RAG.load(index_dir, engine="pipeline", generator=str(tiny_llama_dir), k=2, progress=False)


def test_ask_matches_the_engine_parts(rag, index_dir, tiny_llama_dir):
    params = unirag.SamplingParams(max_new_tokens=6)
    ans = rag.ask(QUESTIONS[0], params)
    # the sources are the retriever's own top-2, numbered [1], [2], with its scores
    res = load_retriever(index_dir, "dense").search([QUESTIONS[0]], 2)
    assert [s.id for s in ans.sources] == res.ids[0]
    assert [s.number for s in ans.sources] == [1, 2]
    assert [s.score for s in ans.sources] == pytest.approx(res.scores[0].tolist(), abs=1e-6)
    # the text is the generator's own greedy completion of the same prompt
    from unirag.models import Generator
    from unirag.pipeline import build_prompt
    from unirag.pipeline.prompt import SYSTEM

    gen = Generator.from_pretrained(str(tiny_llama_dir))
    prompt = gen.chat_prompt(build_prompt(QUESTIONS[0], res.passages(0)), system=SYSTEM)
    assert ans.text == gen.generate(prompt, params)
    assert ans.usage.prompt_tokens == len(gen.encode_prompt(prompt))
    assert ans.usage.completion_tokens == 6 and ans.finish_reason == "length"
    assert ans.trace[0].used == res.ids[0] and ans.engine == "pipeline"
    assert ans.timings.total >= ans.timings.generation > 0
    data = json.loads(json.dumps(ans.to_dict()))
    assert data["schema"] == "unirag-answer/1" and data["sources"][0]["id"] == res.ids[0][0]


def test_batch_of_four_equals_four_single_calls(rag):
    params = unirag.SamplingParams(max_new_tokens=8)
    batch = rag.ask_batch(QUESTIONS, params, batch_size=4)
    single = [rag.ask(q, params) for q in QUESTIONS]
    assert [a.text for a in batch] == [a.text for a in single]
    assert [a.source_ids for a in batch] == [a.source_ids for a in single]


def test_stream_concatenates_to_the_answer(rag):
    params = unirag.SamplingParams(max_new_tokens=8)
    events = list(rag.stream(QUESTIONS[1], params))
    assert isinstance(events[0], RetrievalEvent) and isinstance(events[-1], Finished)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    final = events[-1].answer
    assert text.strip() == final.text == rag.ask(QUESTIONS[1], params).text
    assert [s.id for s in events[0].sources] == final.source_ids
    assert final.timings.first_token is not None and final.usage.completion_tokens == 8


def test_seeded_sampling_is_private_and_repeatable(rag):
    import torch

    p = unirag.SamplingParams(max_new_tokens=8, temperature=1.0, seed=7)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = rag.ask(QUESTIONS[2], p), rag.ask(QUESTIONS[2], p)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG was not touched
    assert a.text == b.text
    others = {rag.ask(QUESTIONS[2], p.with_(seed=s)).text for s in range(8, 14)}
    assert len(others | {a.text}) > 1  # the seed matters


def test_search_and_swap(rag, tmp_path, tiny_encoder_dir, corpus_jsonl):
    hits = rag.search("largest planet", k=3)
    assert [h.number for h in hits] == [1, 2, 3] and len({h.id for h in hits}) == 3
    other = build_index(read_corpus(corpus_jsonl), tmp_path / "other", encoder=str(tiny_encoder_dir),
                        progress=False)
    old = rag.info()["index"]
    rag.swap_index(other)
    try:
        assert rag.info()["index"] == str(other)
        assert rag.search("largest planet", k=3)[0].id == hits[0].id  # same passages, same encoder
    finally:
        rag.swap_index(old)


def test_bad_input_is_refused_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="engine"):
        unirag.RAG.load(engine="foo")
    with pytest.raises(ConfigError, match="retriever"):
        unirag.RAG.load(retriever="foo")
    from unirag.index import IndexFormatError

    with pytest.raises(IndexFormatError, match="no such index folder"):
        unirag.RAG.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        unirag.SamplingParams(max_new_tokens=0)
    with pytest.raises(ConfigError, match="top_p"):
        unirag.SamplingParams(top_p=0)


def test_load_config_round_trips(tmp_path):
    cfg = unirag.LoadConfig(engine="rag-sequence", index="ix", k=5, decoding="fast")
    path = cfg.save(tmp_path / "load.yaml")
    assert unirag.LoadConfig.load(path) == cfg
    p = unirag.SamplingParams(max_new_tokens=9, stop=["\n"], seed=3)
    assert unirag.SamplingParams.from_dict(p.to_dict()) == p


def test_stream_batch_per_request_params_and_cancel(rag):
    """Concurrent requests as one batch: each keeps its own params and seed; cancelling one ends it
    at the next step while the others finish exactly as they would alone."""
    greedy = unirag.SamplingParams(max_new_tokens=8)
    sampled = unirag.SamplingParams(max_new_tokens=6, temperature=1.0, seed=11)
    qs = [QUESTIONS[0], QUESTIONS[1], QUESTIONS[2]]
    seen: dict[int, int] = {}

    def cancelled(i: int) -> bool:
        return i == 2 and seen.get(2, 0) >= 2

    finals = {}
    for i, ev in rag.stream_batch(qs, [greedy, sampled, greedy], cancelled):
        if isinstance(ev, TextDelta):
            seen[i] = seen.get(i, 0) + 1
        elif isinstance(ev, Finished):
            finals[i] = ev.answer
    assert finals[0].text == rag.ask(qs[0], greedy).text
    assert finals[1].text == rag.ask(qs[1], sampled).text  # its own seed, batch or not
    assert finals[2].finish_reason == "cancelled" and finals[2].usage.completion_tokens < 8
    with pytest.raises(ConfigError, match="2 SamplingParams for 3"):
        list(rag.stream_batch(qs, [greedy, greedy]))


def test_questions_join_a_running_batch(rag):
    """Continuous batching through the door: questions admitted between decoding steps get their
    own retrieval event, numbered on, and the answer (text, sources, seed) they get alone."""
    greedy = unirag.SamplingParams(max_new_tokens=8)
    sampled = unirag.SamplingParams(max_new_tokens=6, temperature=1.0, seed=5)
    assert rag.admits(greedy) and not rag.admits(greedy.with_(hops=2))
    arrivals = [[], [], [(QUESTIONS[1], sampled)], [], [(QUESTIONS[2], greedy)]]
    calls = {"n": 0}

    def admit():
        calls["n"] += 1
        return arrivals[calls["n"] - 1] if calls["n"] <= len(arrivals) else []

    finals, order = {}, []
    for i, ev in rag.stream_batch([QUESTIONS[0]], greedy, admit=admit):
        order.append((i, type(ev).__name__))
        if isinstance(ev, Finished):
            finals[i] = ev.answer
    assert sorted(finals) == [0, 1, 2]
    assert order.index((1, "RetrievalEvent")) > order.index((0, "TextDelta"))  # 0 was decoding when 1 joined
    for i, (q, p) in enumerate([(QUESTIONS[0], greedy), (QUESTIONS[1], sampled), (QUESTIONS[2], greedy)]):
        alone = rag.ask(q, p)
        assert finals[i].question == q and finals[i].text == alone.text
        assert [s.id for s in finals[i].sources] == [s.id for s in alone.sources]
        assert finals[i].timings.total >= finals[i].timings.generation > 0


def test_attributed_citations_join_the_text_and_the_stream(rag, monkeypatch):
    """A style with ``attribute``: the passages holding the short answer are appended as markers,
    as the stream's last piece too, and counted as cited."""
    from unirag.pipeline import prompt

    style = prompt.PromptStyle("attr-test", "", "{passages}\n\nQuestion: {question}\nAnswer:", attribute=True)
    monkeypatch.setitem(prompt.STYLES, "attr-test", style)
    monkeypatch.setattr(rag.engine.config, "prompt_style", "attr-test")
    params = unirag.SamplingParams(max_new_tokens=4)
    plain = rag.ask(QUESTIONS[0], params)
    target = plain.sources[1].title  # a string only some passages contain
    monkeypatch.setattr(prompt.PromptStyle, "short_answer", lambda self, text: target)
    ans = rag.ask(QUESTIONS[0], params)
    want = style.attribution(target, ans.sources)
    marks = "".join(f"[{n}]" for n in want)
    assert 2 in want and ans.text == (f"{plain.text} {marks}" if plain.text else marks)
    assert ans.cited == want and "attributed" in ans.extra["citations"]
    streamed = "".join(e.text for e in rag.stream(QUESTIONS[0], params) if isinstance(e, TextDelta))
    assert streamed.strip() == ans.text


def test_no_repeat_ngram_bans_repeats_of_the_generated_text_only(rag):
    from unirag.models.decoding import repeated_ngram_tokens

    assert repeated_ngram_tokens([5, 6, 7, 5, 6], 3) == {7} and repeated_ngram_tokens([5, 6, 7, 5], 2) == {6}
    assert repeated_ngram_tokens([5, 6], 3) == set() and repeated_ngram_tokens([1, 2, 1], 1) == {1, 2}
    eng = rag.engine
    params = unirag.SamplingParams(max_new_tokens=40)
    (prompt, _), = eng.prepare([QUESTIONS[0]], params)
    ids = eng.generator.encode_prompt(prompt)
    dec = eng.generator.decoder()

    def bigrams(t):
        return list(zip(t, t[1:]))

    plain = dec.generate([ids], params)[0].token_ids
    assert len(set(bigrams(plain))) < len(bigrams(plain))  # the tiny random model loops when left alone
    banned = dec.generate([ids], params.with_(no_repeat_ngram=2))[0].token_ids
    assert len(banned) == 40 and len(set(bigrams(banned))) == len(bigrams(banned))
    with pytest.raises(ConfigError, match="no_repeat_ngram"):
        unirag.SamplingParams(no_repeat_ngram=-1)
