"""OneGen QA through the door: answer extraction, the evaluation harness's scoring, ``RAG.load(engine='onegen')``,
``unirag ask --engine onegen`` and ``unirag eval qa``."""

from __future__ import annotations

import json

import pytest

import unirag
from unirag.data.qa import QAItem
from unirag.eval.harness import hop_recall, score_answers
from unirag.models.decoding import Decoder, SamplingParams
from unirag.outputs import Answer, Finished, RetrievalEvent, TextDelta, TraceStep, extract_answer


@pytest.mark.parametrize("text,answer", [
    ("Paris.", "Paris"),
    ("The tower is in France.\nAnswer: Paris", "Paris"),
    ("Sub-question: where?\nanswer: Rome\nFinal answer: \"Leonardo da Vinci\".", "Leonardo da Vinci"),
    ("first line\n\n  last line  \n", "last line"),
    ("It was built in 1889 [1].", "It was built in 1889"),
    ("", ""),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_hop_recall_counts_new_gold_per_hop():
    r = hop_recall([["a", "x"], ["a"], ["b"], []], ["a", "b", "c"])
    assert r["hops"] == [1, 0, 1, 0]
    assert r["recall"] == pytest.approx(2 / 3)
    assert hop_recall([["a"]], [])["recall"] is None


def test_score_uses_squad_normalisation():
    items = [QAItem("1", "q", ["The Eiffel Tower"], ["e"]), QAItem("2", "q", ["1889", "eighteen"], ["f", "g"])]
    answers = [Answer("q", "", trace=[TraceStep("", 0, ["e"], [1.0], ["e"])], short="eiffel tower!"),
               Answer("q", "", trace=[TraceStep("", 0, ["x"], [1.0], ["x"]), TraceStep("", 5, ["g"], [1.0], ["g"])],
                      short="built in 1889")]
    m = score_answers(items, answers)
    assert m["em"] == pytest.approx(50.0)
    assert m["f1"] == pytest.approx(100 * (1.0 + 2 * (1 / 3) * 1 / (1 / 3 + 1)) / 2)
    assert m["evidence_recall"] == pytest.approx(100 * (1.0 + 0.5) / 2)
    assert m["hop_hit_rate"] == [50.0, 100.0]


@pytest.fixture(scope="module")
def door(eager_onegen_dir, eager_index_dir):
    return unirag.RAG.load(eager_index_dir, engine="onegen", model=eager_onegen_dir, progress=False)


def test_door_answer_matches_the_engine_loop(door, eager_onegen):
    from unirag.onegen.docindex import open_onegen_index
    from unirag.onegen.qa import qa_prompt, tail_after_retrieval

    params = SamplingParams(max_new_tokens=6, max_retrievals=2)
    ans = door.ask("Where is the Eiffel Tower?", params)
    # the same loop, driven directly, over the same index
    retriever = open_onegen_index(door.info()["index"], eager_onegen)
    out = Decoder(eager_onegen, retriever).generate(qa_prompt(eager_onegen, "Where is the Eiffel Tower?"),
                                                    params.with_(k=1, max_passage_words=48, no_repeat_ngram=3))[0]
    assert ans.text == out.text.strip() and ans.source_ids == out.sources
    assert [s.step for s in ans.sources] == [r.step for r in out.trace] == [0, 1]  # eager: retrieves first
    assert [s.score for s in ans.sources] == pytest.approx([r.scores[0] for r in out.trace])
    assert [t.used for t in ans.trace] == [r.inserted for r in out.trace]
    assert ans.usage.completion_tokens == len(out.token_ids)
    assert ans.usage.prompt_tokens == len(out.sequence) - len(out.token_ids)  # prompt + inserted passages
    assert ans.short == (extract_answer(tail_after_retrieval(out, eager_onegen.tokenizer)) or extract_answer(out.text))
    assert ans.engine == "onegen" and ans.to_dict()["sources"][1]["step"] == 1


def _repeats(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_onegen_bans_repeated_trigrams_unless_the_request_says_otherwise(door, eager_onegen):
    from unirag.onegen.docindex import open_onegen_index
    from unirag.onegen.qa import qa_prompt

    q = "Where is the Eiffel Tower?"
    retriever = open_onegen_index(door.info()["index"], eager_onegen)
    loop = Decoder(eager_onegen, retriever)
    base = SamplingParams(max_new_tokens=40, max_retrievals=1, k=1, max_passage_words=48)
    off = loop.generate(qa_prompt(eager_onegen, q), base.with_(no_repeat_ngram=0))[0]
    assert _repeats(off.token_ids, 3)  # the tiny random model loops when nothing stops it
    default = door.ask(q, SamplingParams(max_new_tokens=40, max_retrievals=1))
    banned = loop.generate(qa_prompt(eager_onegen, q), base.with_(no_repeat_ngram=3))[0]
    assert default.text == banned.text.strip() and not _repeats(banned.token_ids, 3)
    assert door.ask(q, SamplingParams(max_new_tokens=40, max_retrievals=1, no_repeat_ngram=0)).text == off.text.strip()


def test_onegen_answers_in_bfloat16_over_its_float32_index(door, eager_onegen_dir, eager_index_dir):
    import torch

    half = unirag.RAG.load(eager_index_dir, engine="onegen", model=eager_onegen_dir, dtype="bfloat16", progress=False)
    assert next(half.engine.model.lm.parameters()).dtype == torch.bfloat16
    assert next(door.engine.model.lm.parameters()).dtype == torch.float32
    assert half.info()["index"] == door.info()["index"]  # the same index, not one of its own
    params = SamplingParams(max_new_tokens=6, max_retrievals=2)
    ans = half.ask("Where is the Eiffel Tower?", params)
    assert [s.step for s in ans.sources] == [0, 1] and ans.usage.completion_tokens == 6
    hits = half.search("Where is the Eiffel Tower?", k=3)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score


def test_first_run_notice_only_when_the_index_is_built(eager_onegen_dir, eager_index_dir, tmp_path, monkeypatch,
                                                      capsys):
    import shutil

    import unirag.onegen.docindex as docindex
    from unirag.index.folder import IndexFolder

    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path))
    monkeypatch.setattr(docindex, "ensure_onegen_index", lambda og, folder, progress=True: eager_index_dir)
    unirag.RAG.load(engine="onegen", model=eager_onegen_dir, progress=True)
    assert "built once" in capsys.readouterr().err
    shutil.copytree(eager_index_dir, IndexFolder.cached(docindex.onegen_index_name(eager_onegen_dir)).path)
    unirag.RAG.load(engine="onegen", model=eager_onegen_dir, progress=True)
    assert "built once" not in capsys.readouterr().err


def test_door_batch_and_stream(door):
    params = SamplingParams(max_new_tokens=6, max_retrievals=2)
    qs = ["Where is the Eiffel Tower?", "Who wrote Python?", "How long is the Nile?", "What is Jupiter?"]
    batch = door.ask_batch(qs, params, batch_size=4)
    single = [door.ask(q, params) for q in qs]
    assert [a.text for a in batch] == [a.text for a in single]
    assert [a.source_ids for a in batch] == [a.source_ids for a in single]
    events = list(door.stream(qs[0], params))
    rets = [e for e in events if isinstance(e, RetrievalEvent)]
    assert [e.step.step for e in rets] == [0, 1] and isinstance(events[-1], Finished)
    assert [s.number for e in rets for s in e.sources] == [1, 2]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() == single[0].text
    assert events[-1].answer.source_ids == single[0].source_ids
    hits = door.search("Where is the Eiffel Tower?", k=3)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score


def test_door_questions_join_a_running_batch(door):
    params = SamplingParams(max_new_tokens=6, max_retrievals=2)
    qs = ["Where is the Eiffel Tower?", "Who wrote Python?", "How long is the Nile?"]
    assert door.admits(params)
    calls = {"n": 0}

    def admit():
        calls["n"] += 1
        return {3: [(qs[1], params)], 6: [(qs[2], params)]}.get(calls["n"], [])

    finals = {i: ev.answer for i, ev in door.stream_batch(qs[:1], params, admit=admit) if isinstance(ev, Finished)}
    assert sorted(finals) == [0, 1, 2]
    for i, q in enumerate(qs):
        alone = door.ask(q, params)
        assert finals[i].question == q and finals[i].text == alone.text
        assert finals[i].source_ids == alone.source_ids
        assert [s.number for s in finals[i].sources] == list(range(1, len(alone.sources) + 1))


def test_harness_scores_the_door(door, tmp_path):
    from unirag.eval.harness import evaluate_qa

    params = SamplingParams(max_new_tokens=6, max_retrievals=2)
    items = [QAItem("a", "Where is the Eiffel Tower?", ["Paris"]), QAItem("b", "Who wrote Python?", ["Guido"])]
    answers = door.ask_batch([it.question for it in items], params)
    # gold = the second passage each question retrieves: found at hop 2, never at hop 1
    gold = [QAItem(it.id, it.question, it.answers, [a.source_ids[1]]) for it, a in zip(items, answers)]
    m = evaluate_qa(door, gold, params, batch_size=2, predictions=tmp_path / "p.jsonl")
    assert m["evidence_recall"] == 100.0 and m["hop_hit_rate"] == [0.0, 100.0]
    assert m["mean_retrievals"] == 2.0 and m["passages_used"] == 2.0 and m["n"] == 2
    assert m["latency_p95"] >= m["latency_p50"] > 0
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["sources"][1]["id"] == gold[0].evidence[0]


def test_harness_recall_against_fixed_gold(eager_onegen_dir, eager_onegen, make_passages, tmp_path):
    """Recall against gold fixed in advance: the index holds only d0 and d1, and the eager model
    retrieves at its first two steps (k=1, an inserted passage is not retrieved again), so each
    question finds exactly d0 and d1, whatever its query vectors are."""
    from unirag.eval.harness import evaluate_qa
    from unirag.onegen.docindex import build_onegen_index, model_name

    folder = build_onegen_index(make_passages()[:2], tmp_path / "two", eager_onegen, name=model_name(eager_onegen_dir),
                                progress=False)
    rag = unirag.RAG.load(folder, engine="onegen", model=eager_onegen_dir, progress=False)
    params = SamplingParams(max_new_tokens=6, max_retrievals=2)
    items = [QAItem("a", "Where is the Eiffel Tower?", ["Paris"], ["d0", "d1"]),    # both found: 1, hops [1, 1]
             QAItem("b", "Who wrote Python?", ["Guido"], ["d1", "d7"]),             # d1 only: 1/2
             QAItem("c", "What is the largest planet?", ["Jupiter"], ["d3"])]       # not indexed: 0, hops [0, 0]
    answers = rag.ask_batch([it.question for it in items], params)
    for a in answers:
        assert sorted(a.source_ids) == ["d0", "d1"] and [s.step for s in a.sources] == [0, 1]
    metrics = evaluate_qa(rag, items, params, batch_size=2)
    assert metrics["evidence_recall"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    # item b hits d1 at whichever hop found it: one hit in total over its two hops
    assert sum(metrics["hop_hit_rate"]) == pytest.approx(100 * (2 + 1 + 0) / 3)
    assert metrics["mean_retrievals"] == 2.0


def test_baselines_share_the_generator(eager_onegen_dir, tiny_encoder_dir, tmp_path, make_passages):
    from unirag.eval.harness import evaluate_qa
    from unirag.retrieval.build import build_index

    items = [QAItem("a", "Where is the Eiffel Tower?", ["Paris"], ["d1"]),
             QAItem("b", "Who wrote Python?", ["Guido"], ["d7"])]
    params = SamplingParams(max_new_tokens=5)
    closed = unirag.RAG.load(engine="closed-book", generator=str(eager_onegen_dir), progress=False)
    res = closed.ask_batch([it.question for it in items], params)
    assert all(a.sources == [] and a.text for a in res)  # the OneGen LM reads, the query token is banned
    m = evaluate_qa(closed, items, params)
    assert m["n"] == 2 and m["evidence_recall"] == 0.0 and m["passages_used"] == 0.0
    # three indexed passages and k=3: every question retrieves d0, d1, d2 whatever the encoder, so the
    # gold d1 is found and d7 (not indexed) is not
    folder = build_index(make_passages()[:3], tmp_path / "mini", encoder=str(tiny_encoder_dir), bm25=False,
                         progress=False)
    pipe = unirag.RAG.load(folder, engine="pipeline", generator=str(eager_onegen_dir), k=3, progress=False)
    res = pipe.ask_batch([it.question for it in items], params)
    assert all(sorted(a.source_ids) == ["d0", "d1", "d2"] for a in res)
    assert evaluate_qa(pipe, items, params)["evidence_recall"] == 50.0


def test_fanoutqa_sets_are_joined_with_the_corpus():
    from unirag.data import wiki_summaries
    from unirag.data.qa import load_qa_set

    single, multi = load_qa_set("fanoutqa-single"), load_qa_set("fanoutqa-multi")
    titles = set(wiki_summaries())
    assert len(single) == 160 and all(it.evidence[0] in titles and it.answers for it in single)
    assert len(multi) == 93 and all(set(it.evidence) <= titles for it in multi)
    assert sum(1 for it in multi if it.evidence) == 46


def test_cli_ask_engine_onegen_uses_the_default_model(eager_onegen_dir, eager_index_dir, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from unirag.cli.app import app

    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path))
    shutil.copytree(eager_onegen_dir, tmp_path / "onegen" / "smollm2-onegen")
    res = CliRunner().invoke(app, ["ask", "--engine", "onegen", "Where is the Eiffel Tower?", "--index",
                                   str(eager_index_dir), "--max-new-tokens", "6", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["schema"] == "unirag-answer/1" and data["engine"] == "onegen"
    assert [s["step"] for s in data["sources"]] == [0, 1, 2, 3] and data["index"] == str(eager_index_dir)
    assert all(s["score"] == t["scores"][0] for s, t in zip(data["sources"], data["trace"]))
    res = CliRunner().invoke(app, ["ask", "--engine", "onegen", "Where is the Eiffel Tower?", "--index",
                                   str(eager_index_dir), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "retrieved:" in res.stdout and "Sources" in res.stdout and "[1]" in res.stdout and "step 0" in res.stdout


def test_cli_eval_qa(eager_onegen_dir, eager_index_dir, tmp_path):
    from typer.testing import CliRunner

    from unirag.cli.app import app

    # `--generator onegen` reads with the LM of the --model folder (not the default OneGen model)
    res = CliRunner().invoke(app, ["eval", "qa", "--engine", "onegen,closed-book", "--limit", "3", "--model",
                                   str(eager_onegen_dir), "--onegen-index", str(eager_index_dir), "--generator",
                                   "onegen", "--max-new-tokens", "5", "--out", str(tmp_path / "pred"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["n"] == 3 and set(report["engines"]) == {"onegen", "closed-book"}
    assert report["engines"]["closed-book"]["config"]["generator"] == str(eager_onegen_dir)
    assert report["engines"]["onegen"]["mean_retrievals"] == 4.0
    assert report["engines"]["closed-book"]["mean_retrievals"] == 0.0
    # the gold evidence are Wikipedia titles, the test index holds ids d0..d9: nothing can be found
    assert report["engines"]["onegen"]["evidence_recall"] == 0.0
    rows = (tmp_path / "pred" / "qa-fanoutqa-single-onegen.jsonl").read_text().splitlines()
    assert len(rows) == 3 and len(json.loads(rows[0])["sources"]) == 4
    assert json.loads((tmp_path / "pred" / "report.json").read_text()) == report


def test_cli_eval_qa_refuses_bad_engine_before_any_work(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from unirag.cli.app import main

    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("sys.argv", ["unirag", "eval", "qa", "--engine", "pipeline,foo"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and not (tmp_path / "cache" / "indexes").exists()
