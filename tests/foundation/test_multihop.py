"""Multi-hop retrieval of the pipeline engine (unirag.pipeline.iterative) on a tiny random Llama and
a tiny encoder's six-passage index. The reader's follow-up queries are scripted by replacing the
generator's ``generate_batch`` (only the follow-ups go through it; the final answer decodes in the
engine's own streaming loop), so the loop's mechanics are tested exactly."""

from __future__ import annotations

import dataclasses

import pytest

import unirag
from unirag.config import ConfigError
from unirag.models.decoding import Output
from unirag.outputs import Finished, RetrievalEvent, TextDelta
from unirag.pipeline.iterative import FOLLOWUP_ASK, parse_followup

Q = "who painted the portrait"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_encoder_dir):
    from tests.conftest import PASSAGES
    from unirag.corpus import Passage
    from unirag.retrieval import build_index

    docs = [Passage(p["id"], p["text"], p["title"]) for p in PASSAGES]
    return build_index(docs, tmp_path_factory.mktemp("hops") / "ix", encoder=str(tiny_encoder_dir), progress=False)


@pytest.fixture(scope="module")
def rag(index_dir, tiny_llama_dir):
    return unirag.RAG.load(index_dir, engine="pipeline", generator=str(tiny_llama_dir), k=2, hop_mode="followup",
                           progress=False)


@pytest.fixture
def engine(rag):
    """The loaded pipeline engine; its config is restored after each test."""
    saved = rag.engine.config
    yield rag.engine
    rag.engine.config = saved


def script(monkeypatch, engine, replies):
    """Follow-up replies come from ``replies(question, call)``; returns the list of calls, each
    the questions asked in that ``generate_batch`` call."""
    calls: list[list[str]] = []

    def fake(prompts, params=None):
        qs = [p.split("Question: ", 1)[1].split("\n", 1)[0] for p in prompts]
        assert all(FOLLOWUP_ASK in p for p in prompts)
        calls.append(qs)
        return [Output(i, replies(q, len(calls) - 1), "", [1, 2], [], [], "stop") for i, q in enumerate(qs)]

    monkeypatch.setattr(engine.generator, "generate_batch", fake)
    return calls


def configure(engine, **kw):
    engine.config = dataclasses.replace(engine.config, **kw)


PARAMS = unirag.SamplingParams(max_new_tokens=4)


def test_stops_at_the_hop_budget(rag, engine, monkeypatch):
    configure(engine, hops=3, k=1)
    calls = script(monkeypatch, engine, lambda q, n: ["Jupiter planet", "Nile river"][n % 2])
    ans = rag.ask(Q, PARAMS)
    assert len(ans.trace) == 3 and len(calls) == 2  # 3 retrievals, 2 follow-ups between them
    assert [t.step for t in ans.trace] == [0, 1, 2]
    # the text searched: the question followed by the reader's follow-up (followup_anchor)
    assert [t.query for t in ans.trace] == [Q, f"{Q} Jupiter planet", f"{Q} Nile river"]
    assert len(ans.sources) == 3 and ans.extra["hops"]["stopped"] == "hops"
    assert ans.extra["hops"]["queries"] == [f"{Q} Jupiter planet", f"{Q} Nile river"]
    configure(engine, hops=3, k=1, followup_anchor=False)  # or the follow-up alone
    ans = rag.ask(Q, PARAMS)
    assert [t.query for t in ans.trace] == [Q, "Jupiter planet", "Nile river"]


def test_stops_at_the_passage_budget(rag, engine, monkeypatch):
    configure(engine, hops=5, k=2, max_passages=3)
    calls = script(monkeypatch, engine, lambda q, n: "Beethoven composer")
    ans = rag.ask(Q, PARAMS)
    assert len(ans.sources) == 3 and [len(t.used) for t in ans.trace] == [2, 1]
    assert len(calls) == 1 and ans.extra["hops"]["stopped"] == "passages"


def test_stops_at_the_prompt_token_budget(rag, engine, monkeypatch):
    script(monkeypatch, engine, lambda q, n: "Beethoven composer")
    configure(engine, hops=4, k=2)
    full = rag.ask(Q, PARAMS)
    base = len(engine.generator.encode_prompt(engine.render_prompt(Q, [])))
    configure(engine, hops=4, k=2, max_prompt_tokens=base + 40)  # room for one or two passages
    ans = rag.ask(Q, PARAMS)
    assert 1 <= len(ans.sources) < len(full.sources) and ans.extra["hops"]["stopped"] == "tokens"
    assert ans.usage.prompt_tokens <= base + 40 + 2


def test_never_reads_a_passage_twice(rag, engine, monkeypatch):
    configure(engine, hops=6, k=2, max_passages=100)
    script(monkeypatch, engine, lambda q, n: "Mona Lisa portrait")  # the same query every hop
    ans = rag.ask(Q, PARAMS)
    ids = [s.id for s in ans.sources]
    assert len(ids) == len(set(ids)) == 6  # the whole index, each passage once
    used = [pid for t in ans.trace for pid in t.used]
    assert used == ids and ans.retrieved_ids == ids
    for t in ans.trace[1:]:  # each hop searched deeper than what was read, kept only new passages
        assert len(t.ids) > len(t.used) or not t.used
    assert ans.extra["hops"]["stopped"] == "exhausted"


def test_stops_early_when_the_reader_says_done(rag, engine, monkeypatch):
    configure(engine, hops=3, k=1)
    calls = script(monkeypatch, engine, lambda q, n: "DONE" if q == Q else ["Nile river", "Jupiter"][n])
    other = "largest planet"
    a, b = rag.ask_batch([Q, other], PARAMS)
    assert len(a.trace) == 1 and a.extra["hops"]["stopped"] == "done"
    assert len(b.trace) == 3 and b.extra["hops"]["stopped"] == "hops"
    # one generate_batch per hop over the questions still searching
    assert calls == [[Q, other], [other]]


def test_sources_numbered_across_hops_in_the_final_prompt(rag, engine, monkeypatch):
    configure(engine, hops=3, k=2)
    script(monkeypatch, engine, lambda q, n: ["Nile river Africa", "German composer"][n])
    events = list(rag.stream(Q, PARAMS))
    hops = [e for e in events if isinstance(e, RetrievalEvent)]
    assert len(hops) == 3 and all(isinstance(e, RetrievalEvent) for e in events[:3])
    assert isinstance(events[-1], Finished) and all(isinstance(e, TextDelta) for e in events[3:-1])
    ans = events[-1].answer
    assert [s.number for s in ans.sources] == list(range(1, len(ans.sources) + 1))
    assert [s.meta["hop"] for s in ans.sources] == [h for e in hops for h in [e.step.step] * len(e.sources)]
    # each hop's event numbers its new sources where the final list has them
    assert [s.number for e in hops for s in e.sources] == [s.number for s in ans.sources]
    assert [s.id for e in hops for s in e.sources] == ans.source_ids
    # the final prompt holds every source, in that order, numbered across hops
    from unirag.corpus import Passage

    passages = [Passage(s.id, s.text, s.title) for s in ans.sources]
    prompt = engine.render_prompt(Q, passages)
    pos = [prompt.index(f"[{s.number}] {s.title}:") for s in ans.sources]
    assert pos == sorted(pos)
    assert ans.usage.prompt_tokens == len(engine.generator.encode_prompt(prompt))
    # and the answer is the reader's own greedy completion of that prompt
    monkeypatch.undo()
    assert ans.text == engine.generator.generate(prompt, PARAMS)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() == ans.text


def test_single_hop_is_the_single_shot_pipeline(rag, engine, index_dir, tiny_llama_dir, monkeypatch):
    from unirag.models import Generator
    from unirag.pipeline import build_prompt
    from unirag.pipeline.prompt import SYSTEM
    from unirag.retrieval import load_retriever

    assert engine.config.hops == 1
    params = unirag.SamplingParams(max_new_tokens=6)
    ans = rag.ask(Q, params)
    res = load_retriever(index_dir, "dense").search([Q], 2)
    gen = Generator.from_pretrained(str(tiny_llama_dir))
    prompt = gen.chat_prompt(build_prompt(Q, res.passages(0)), system=SYSTEM)
    assert ans.text == gen.generate(prompt, params) and ans.source_ids == res.ids[0]
    assert [t.step for t in ans.trace] == [None] and ans.extra == {}
    assert "hop" not in ans.sources[0].meta
    # the multi-hop final prompt is built by the same function as the single-shot one
    assert engine.render_prompt(Q, res.passages(0)) == engine.prepare([Q], params)[0][0]
    # hops=1 per request on a multi-hop engine is the same single shot; the reader is never asked
    calls = script(monkeypatch, engine, lambda q, n: "never")
    configure(engine, hops=3)
    again = rag.ask(Q, params.with_(hops=1))
    assert again.to_dict()["answer"] == ans.text and again.source_ids == ans.source_ids and calls == []


def test_hops_per_request(rag, engine, monkeypatch):
    script(monkeypatch, engine, lambda q, n: "Jupiter")
    ans = rag.ask(Q, PARAMS.with_(hops=2))
    assert len(ans.trace) == 2 and len(ans.sources) == 4
    out = {i: ev.answer for i, ev in rag.stream_batch([Q, Q], [PARAMS.with_(hops=2), PARAMS])
           if isinstance(ev, Finished)}
    assert len(out[0].trace) == 2 and [t.step for t in out[1].trace] == [None]


def test_options_are_checked(index_dir, tiny_llama_dir):
    with pytest.raises(ConfigError, match="hops"):
        unirag.SamplingParams(hops=0)
    with pytest.raises(ConfigError, match="hops"):
        unirag.LoadConfig(hops=0).validate()
    with pytest.raises(ConfigError, match="pipeline option"):
        unirag.LoadConfig(engine="onegen", hops=2).validate()
    with pytest.raises(ConfigError, match="max_passages"):
        unirag.LoadConfig(hops=2, max_passages=0).validate()
    cfg = unirag.LoadConfig(index=str(index_dir), generator=str(tiny_llama_dir), hops=3, max_passages=5)
    assert unirag.LoadConfig.from_dict(cfg.to_dict()) == cfg
    rag = unirag.RAG.load(index_dir, generator=str(tiny_llama_dir), k=1, hops=3, max_passages=2, progress=False)
    assert (rag.engine.config.hops, rag.engine.config.k, rag.engine.config.max_passages) == (3, 1, 2)


@pytest.mark.parametrize("reply, query", [
    ("Mount Everest first ascent", "Mount Everest first ascent"),
    ("Search query: \"K2 first ascent\"\nmore", "K2 first ascent"),
    ("  DONE", None), ("Done.", None), ("", None), ("...", None),
])
def test_parse_followup(reply, query):
    assert parse_followup(reply) == query


def test_cli_ask_and_eval_qa_take_hops(index_dir, tiny_llama_dir, tmp_path):
    import json
    import subprocess
    import sys

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "unirag.cli.app", *map(str, args)], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    ans = json.loads(run("ask", Q, "--index", index_dir, "--generator", tiny_llama_dir, "--hops", "2", "-k", "1",
                         "--hop-mode", "followup", "--max-new-tokens", "3", "--json"))
    assert 1 <= len(ans["trace"]) <= 2 and [t["step"] for t in ans["trace"]] == list(range(len(ans["trace"])))
    ids = [s["id"] for s in ans["sources"]]
    assert len(ids) == len(set(ids)) == len(ans["trace"]) and ans["sources"][0]["meta"]["hop"] == 0
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": Q, "answers": ["Leonardo"], "evidence": ["p1"]}) + "\n")
    rep = json.loads(run("eval", "qa", "--engine", "pipeline", "--set", qa, "--index", index_dir, "--generator",
                         tiny_llama_dir, "--hops", "3", "-k", "1", "--max-passages", "2", "--hop-mode", "followup", "--max-new-tokens", "3",
                         "--json"))
    m = rep["engines"]["pipeline"]
    assert m["config"]["hops"] == 3 and m["config"]["max_passages"] == 2 and m["passages_used"] <= 2
