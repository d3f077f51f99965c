"""Plan-first multi-hop (unirag.pipeline.plan, ``hop_mode="plan"``) on a tiny random Llama and a
tiny encoder's six-passage index. The reader's plans are scripted by replacing the generator's
``generate_batch`` (only the plans go through it; the final answer decodes in the engine's own
loop), so the loop's mechanics are tested exactly."""

from __future__ import annotations

import dataclasses
import json

import pytest

import unirag
from unirag.config import ConfigError
from unirag.corpus.passage import CorpusError
from unirag.models.decoding import Output
from unirag.pipeline.plan import (PlanExample, Planner, indexed_examples, merge_plans, packaged_examples, parse_plan,
                                  plan_prompt, read_examples)

Q = "who painted the portrait"
EXAMPLES = [PlanExample("which planet is largest", ("Jupiter",)),
            PlanExample("who wrote the ninth symphony", ("Beethoven",)),
            PlanExample("which river flows north", ("Nile",)),
            PlanExample("where is the iron tower", ("Eiffel Tower", "Paris"))]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_encoder_dir):
    from tests.conftest import PASSAGES
    from unirag.corpus import Passage
    from unirag.retrieval import build_index

    docs = [Passage(p["id"], p["text"], p["title"]) for p in PASSAGES]
    return build_index(docs, tmp_path_factory.mktemp("plan") / "ix", encoder=str(tiny_encoder_dir), progress=False)


@pytest.fixture(scope="module")
def examples_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ex") / "examples.jsonl"
    path.write_text("".join(json.dumps({"question": e.question, "articles": list(e.articles)}) + "\n"
                            for e in EXAMPLES))
    return path


@pytest.fixture(scope="module")
def rag(index_dir, tiny_llama_dir, examples_file):
    return unirag.RAG.load(index_dir, engine="pipeline", generator=str(tiny_llama_dir), k=1, hops=4,
                           hop_mode="plan", plan_examples=examples_file, progress=False)


@pytest.fixture
def engine(rag):
    saved = rag.engine.config
    yield rag.engine
    rag.engine.config = saved


def script(monkeypatch, engine, replies):
    """Plan replies come from ``replies(question, sample)``; returns the prompts of each call."""
    calls: list[list[str]] = []

    def fake(prompts, params=None):
        calls.append(list(prompts))
        outs = []
        for i, p in enumerate(prompts):
            q = p.rsplit("Question: ", 1)[1].split("\n", 1)[0]
            sample = sum(1 for c in calls[-1][:i] if c.rsplit("Question: ", 1)[1].startswith(q))
            outs.append(Output(i, replies(q, sample), "", [1, 2, 3], [], [], "stop"))
        return outs

    monkeypatch.setattr(engine.generator, "generate_batch", fake)
    return calls


def configure(engine, **kw):
    engine.config = dataclasses.replace(engine.config, **kw)


PARAMS = unirag.SamplingParams(max_new_tokens=4)


@pytest.mark.parametrize("reply, names", [
    (" China; India; United States", ["China", "India", "United States"]),
    (" Nile; nile river; Nile;  ; ...\nQuestion: next", ["Nile", "nile river"]),
    (' "K2"; Lhotse. Question: more', ["K2", "Lhotse"]),
    ("", []),
])
def test_parse_plan(reply, names):
    assert parse_plan(reply) == names


def test_merge_plans_takes_turns_and_drops_repeats():
    assert merge_plans([["a", "b", "c"], ["B", "d"], ["e"]], 10) == ["a", "B", "e", "d", "c"]
    assert merge_plans([["a", "b", "c"], ["d"]], 3) == ["a", "d", "b"]
    assert merge_plans([], 3) == []


def test_prompt_shows_the_nearest_examples_last_and_skips_the_question_itself():
    planner = Planner(EXAMPLES + [PlanExample(Q, ("Mona Lisa",))], shots=2, samples=2)
    (first, second), = planner.prompts([Q])
    assert "Mona Lisa" not in first + second  # its own example would hand over the answer
    assert first.endswith(f"Question: {Q}\nArticles:") and first.count("Question:") == 3
    assert plan_prompt("q", EXAMPLES[:1]) == "Question: which planet is largest\nArticles: Jupiter\n\nQuestion: q\nArticles:"
    order = Planner(EXAMPLES).nearest(["which planet is the largest one"])[0]
    assert order[0] == 0  # most shared words


def test_plan_reads_each_name_then_fills_from_the_question(rag, engine, monkeypatch):
    configure(engine, hops=4, k=1, max_passages=5, plan_samples=2, plan_shots=2)
    calls = script(monkeypatch, engine, lambda q, s: ["Jupiter; Nile", "nile; Beethoven; Paris"][s])
    ans = rag.ask(Q, PARAMS)
    assert len(calls) == 1 and len(calls[0]) == 2  # one batched call: the question's two plans
    titles = [s.title for s in ans.sources]
    # hop 0: the question's best passage; then one passage per name (merged in turn: "Nile" is the
    # same name as "nile"), the hop budget ends the names, the question's ranking fills the rest
    assert [t.query for t in ans.trace] == [Q, "Jupiter", "nile", "Beethoven", Q]
    by_title = {p.title.lower(): p.id for p in engine.retriever.store}
    read, by_name = list(ans.trace[0].used), 0
    for step in ans.trace[1:4]:  # a passage titled with the name (any case) ranks first, unless read
        want = by_title[step.query.lower()]
        assert step.used == [want] if want not in read else (len(step.used) == 1 and step.used[0] not in read)
        by_name += step.used == [want]
        read += step.used
    assert by_name >= 1  # the case above happened
    assert len(titles) == len(set(titles)) == 5
    assert ans.trace[-1].step == 4 and titles[4] not in titles[:4]
    assert [s.meta["hop"] for s in ans.sources] == [0, 1, 2, 3, 4]
    assert ans.extra["hops"]["stopped"] == "hops" and len(ans.extra["hops"]["replies"]) == 2


def test_a_name_without_its_own_passage_is_searched_with_the_question(rag, engine, monkeypatch):
    configure(engine, hops=3, k=1, max_passages=3, plan_samples=1, plan_anchor=True)
    script(monkeypatch, engine, lambda q, s: "iron lattice; Jupiter")
    ans = rag.ask(Q, PARAMS)
    # "iron lattice" titles no passage: searched in the question's context; "Jupiter" does: alone
    assert [t.query for t in ans.trace] == [Q, f"{Q} iron lattice", "Jupiter"]
    ranked = engine.retriever.search([f"{Q} iron lattice"], 6)
    assert ans.trace[1].used == [next(i for i in ranked.ids[0] if i not in ans.trace[0].used)]
    configure(engine, plan_anchor=False)
    ans = rag.ask(Q, PARAMS)
    assert [t.query for t in ans.trace] == [Q, "iron lattice", "Jupiter"]


def test_indexed_examples_keep_only_articles_the_index_holds():
    kept = indexed_examples(EXAMPLES + [PlanExample("q", ("Atlantis",))], {"eiffel tower", "nile"})
    assert kept == [PlanExample("which river flows north", ("Nile",)),
                    PlanExample("where is the iron tower", ("Eiffel Tower",))]


def test_plan_settings_reach_the_plans(rag, engine, monkeypatch):
    configure(engine, hops=2, k=1, max_passages=2, plan_samples=1, plan_shots=4, plan_no_repeat=4, plan_indexed=True)
    seen = []
    calls = script(monkeypatch, engine, lambda q, s: "Jupiter")
    fake = engine.generator.generate_batch
    monkeypatch.setattr(engine.generator, "generate_batch",
                        lambda prompts, params=None: seen.append(params) or fake(prompts, params))
    rag.ask(Q, PARAMS)
    assert seen[0].no_repeat_ngram == 4 and seen[0].stop == ["\n"]
    prompt = calls[0][0]
    # "Paris" titles no passage of this index: the example shows only "Eiffel Tower"
    assert "Articles: Eiffel Tower\n" in prompt and "Paris" not in prompt and prompt.count("Question:") == 5
    configure(engine, plan_indexed=False, plan_no_repeat=0)
    rag.ask(Q, PARAMS)
    assert seen[1].no_repeat_ngram == 0 and "Articles: Eiffel Tower; Paris\n" in calls[1][0]


def test_indexed_examples_follow_an_index_swap(rag, engine, monkeypatch, tmp_path, index_dir, tiny_encoder_dir):
    from tests.conftest import PASSAGES
    from unirag.corpus import Passage
    from unirag.retrieval import build_index

    configure(engine, hops=2, k=1, max_passages=2, plan_samples=1, plan_shots=4, plan_indexed=True)
    calls = script(monkeypatch, engine, lambda q, s: "Jupiter")
    rag.ask(Q, PARAMS)
    assert "Articles: Eiffel Tower\n" in calls[0][0]
    docs = [Passage(p["id"], p["text"], p["title"]) for p in PASSAGES if p["title"] != "Eiffel Tower"]
    other = build_index(docs, tmp_path / "ix", encoder=str(tiny_encoder_dir), progress=False)
    try:
        engine.swap_index(str(other))
        rag.ask(Q, PARAMS)
        assert "iron tower" not in calls[1][0] and calls[1][0].count("Question:") == 4  # its example is gone
        docs = [Passage(p["id"], p["text"], p["title"]) for p in PASSAGES
                if p["title"] in ("Mona Lisa", "Photosynthesis")]
        engine.swap_index(str(build_index(docs, tmp_path / "none", encoder=str(tiny_encoder_dir), progress=False)))
        rag.ask(Q, PARAMS)
        assert "Articles: Eiffel Tower; Paris\n" in calls[2][0]  # no example article indexed: all shown
    finally:
        engine.swap_index(str(index_dir))


def test_plan_stops_at_the_passage_budget_and_never_reads_twice(rag, engine, monkeypatch):
    configure(engine, hops=10, k=2, max_passages=3, plan_samples=1)
    script(monkeypatch, engine, lambda q, s: "Mona Lisa; Jupiter; Nile; Beethoven")
    ans = rag.ask(Q, PARAMS)
    ids = [s.id for s in ans.sources]
    assert len(ids) == len(set(ids)) == 3 and ans.extra["hops"]["stopped"] == "passages"
    configure(engine, hops=10, k=1, max_passages=100, plan_samples=1)
    script(monkeypatch, engine, lambda q, s: "Mona Lisa; Mona Lisa portrait; painting")
    ans = rag.ask(Q, PARAMS)
    ids = [s.id for s in ans.sources]
    assert len(ids) == len(set(ids)) == 6  # names that repeat what was read still add new passages


def test_an_empty_plan_still_fills_the_budget(rag, engine, monkeypatch):
    configure(engine, hops=4, k=1, max_passages=3, plan_samples=1)
    script(monkeypatch, engine, lambda q, s: "")
    ans = rag.ask(Q, PARAMS)
    assert [t.query for t in ans.trace] == [Q, Q] and len(ans.sources) == 3
    single = rag.ask(Q, unirag.SamplingParams(max_new_tokens=4, hops=1, k=3))
    assert [s.id for s in ans.sources] == [s.id for s in single.sources]  # the single-shot top 3


def test_plan_budget_defaults_to_hop_0_and_one_passage_per_name(rag, engine, monkeypatch):
    configure(engine, hops=3, k=2, max_passages=None, plan_samples=1)
    script(monkeypatch, engine, lambda q, s: "Jupiter; Nile; Beethoven; Paris")
    ans = rag.ask(Q, PARAMS)
    assert len(ans.sources) == 2 + 2 and len(ans.trace) == 3 and ans.extra["hops"]["stopped"] == "hops"


def test_examples_file_errors_name_the_line(tmp_path, index_dir, tiny_llama_dir):
    bad = tmp_path / "ex.jsonl"
    bad.write_text('{"question": "q", "articles": ["A"]}\n\n{"question": "q2", "articles": []}\n')
    with pytest.raises(CorpusError, match=r"ex.jsonl:3: field 'articles'"):
        read_examples(bad)
    bad.write_text("{oops\n")
    with pytest.raises(CorpusError, match=r"ex.jsonl:1: invalid JSON"):
        unirag.LoadConfig(index=str(index_dir), generator=str(tiny_llama_dir), hops=2, hop_mode="plan",
                          plan_examples=str(bad)).validate()
    with pytest.raises(ConfigError, match="hop_mode"):
        unirag.LoadConfig(hops=2, hop_mode="tree").validate()
    cfg = unirag.LoadConfig(index=str(index_dir), generator=str(tiny_llama_dir), hops=3, hop_mode="plan")
    assert unirag.LoadConfig.from_dict(cfg.to_dict()) == cfg


def test_packaged_examples_hold_no_heldout_question():
    from unirag.data.fanoutqa import fanoutqa_split

    train, held = fanoutqa_split()
    ex = packaged_examples()
    assert len(ex) == len(train) and {e.question for e in ex} == {q.question for q in train}
    assert not {e.question for e in ex} & {q.question for q in held}
    assert all(1 <= len(e.articles) <= 16 for e in ex)


def test_cli_ask_takes_the_plan_mode(index_dir, tiny_llama_dir, examples_file):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "unirag.cli.app", "ask", Q, "--index", str(index_dir),
                           "--generator", str(tiny_llama_dir), "--hops", "3", "-k", "1", "--max-passages", "4",
                           "--hop-mode", "plan", "--plan-examples", str(examples_file), "--max-new-tokens", "3",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ans = json.loads(proc.stdout)
    ids = [s["id"] for s in ans["sources"]]
    assert len(ids) == len(set(ids)) == 4 and ans["trace"][0]["query"] == Q
    assert ans["trace"][-1]["query"] == Q or len(ans["trace"]) == 3  # the fill, unless three names filled it


def test_serve_config_passes_the_mode_to_the_pipeline(index_dir, tiny_llama_dir):
    from unirag.serve import ServeConfig

    cfg = ServeConfig(engines=["pipeline", "closed-book"], index=str(index_dir), generator=str(tiny_llama_dir),
                      hops=3, hop_mode="followup").validate()
    assert cfg.load_config("pipeline").hop_mode == "followup" and cfg.load_config("closed-book").hops == 1
    assert ServeConfig().hop_mode == unirag.LoadConfig().hop_mode == "plan"  # the measured default
    with pytest.raises(ConfigError, match="hop_mode"):
        ServeConfig(hop_mode="tree", hops=2).load_config("pipeline")
