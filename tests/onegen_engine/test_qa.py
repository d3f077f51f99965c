"""OneGen QA: answer extraction, per-hop evidence recall, scoring, baselines, the ask entry point."""

from __future__ import annotations

import json

import pytest

from unirag.onegen.engine import OneGenEngine, SamplingParams
from unirag.onegen.qa import QAItem, extract_answer, hop_recall, run_onegen_qa, score


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
    m = score(items, ["eiffel tower!", "built in 1889"], [[["e"]], [["x"], ["g"]]])
    assert m["em"] == pytest.approx(50.0)
    assert m["f1"] == pytest.approx(100 * (1.0 + 2 * (1 / 3) * 1 / (1 / 3 + 1)) / 2)
    assert m["evidence_recall"] == pytest.approx(100 * (1.0 + 0.5) / 2)
    assert m["hop_hit_rate"] == [50.0, 100.0]


def test_run_onegen_qa_traces_and_recall(eager_onegen, eager_onegen_dir, make_passages, tmp_path):
    """Recall against gold fixed in advance: the index holds only d0 and d1, and the eager model
    retrieves at its first two steps (k=1, an inserted passage is not retrieved again), so each
    question finds exactly d0 and d1, whatever its query vectors are."""
    from unirag.onegen.docindex import OneGenIndex, build_onegen_index, model_name

    folder = build_onegen_index(make_passages()[:2], tmp_path / "two", eager_onegen, name=model_name(eager_onegen_dir),
                                progress=False)
    engine = OneGenEngine(eager_onegen, OneGenIndex.load(folder))
    params = SamplingParams(max_new_tokens=6, max_retrievals=2, k=1)
    items = [QAItem("a", "Where is the Eiffel Tower?", ["Paris"], ["d0", "d1"]),    # both found: 1, hops [1, 1]
             QAItem("b", "Who wrote Python?", ["Guido"], ["d1", "d7"]),             # d1 only: 1/2
             QAItem("c", "What is the largest planet?", ["Jupiter"], ["d3"])]       # not indexed: 0, hops [0, 0]
    metrics, results = run_onegen_qa(engine, eager_onegen, items, params, batch_size=2)
    for r in results:
        assert len(r.trace) == 2 and sorted(r.sources) == ["d0", "d1"] and [t["step"] for t in r.trace] == [0, 1]
    assert metrics["evidence_recall"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    # item b hits d1 at whichever hop found it: one hit in total over its two hops
    assert sum(metrics["hop_hit_rate"]) == pytest.approx(100 * (2 + 1 + 0) / 3)
    assert metrics["mean_retrievals"] == 2.0


def test_baselines_share_the_generator(eager_onegen, tiny_encoder_dir, tmp_path, make_passages):
    from unirag.onegen.benchmark import closed_book, pipeline_baseline
    from unirag.retrieval import DenseRetriever
    from unirag.retrieval.build import build_index

    items = [QAItem("a", "Where is the Eiffel Tower?", ["Paris"], ["d1"]),
             QAItem("b", "Who wrote Python?", ["Guido"], ["d7"])]
    params = SamplingParams(max_new_tokens=5)
    m, res = closed_book(eager_onegen, items, params)
    assert all(r.sources == [] and r.text for r in res)  # the query token is banned: it writes text
    assert m["n"] == 2 and "evidence_recall" not in m        # no retrieval, no evidence metric
    # three indexed passages and k=3: every question retrieves d0, d1, d2 whatever the encoder, so the
    # gold d1 is found and d7 (not indexed) is not
    folder = build_index(make_passages()[:3], tmp_path / "mini", encoder=str(tiny_encoder_dir), bm25=False,
                         progress=False)
    retriever = DenseRetriever.load(folder)
    m, res = pipeline_baseline(eager_onegen, items, retriever, params, k=3)
    assert all(sorted(r.sources) == ["d0", "d1", "d2"] for r in res)
    assert res[0].sources == retriever.search([items[0].question], 3).ids[0]
    assert m["evidence_recall"] == 50.0


def test_fanoutqa_items_are_joined_with_the_corpus():
    from unirag.data import wiki_summaries
    from unirag.onegen.qa import fanoutqa_items

    single, multi = fanoutqa_items("single"), fanoutqa_items("multi")
    titles = set(wiki_summaries())
    assert len(single) == 160 and all(it.evidence[0] in titles and it.answers for it in single)
    assert len(multi) == 93 and all(set(it.evidence) <= titles for it in multi)


def test_ask_onegen_prints_answer_and_sources(eager_onegen_dir, eager_index_dir, capsys):
    from unirag.cli.onegen import ask_onegen

    data = ask_onegen("Where is the Eiffel Tower?", index=eager_index_dir, model=str(eager_onegen_dir),
                      max_new_tokens=6, as_json=True, max_retrievals=3)
    printed = json.loads(capsys.readouterr().out)
    assert printed["sources"] == data["sources"] and len(data["sources"]) == 3
    assert [s["step"] for s in data["sources"]] == [0, 1, 2]
    assert all(s["score"] == t["scores"][0] for s, t in zip(data["sources"], data["trace"]))
    ask_onegen("Where is the Eiffel Tower?", index=eager_index_dir, model=str(eager_onegen_dir), max_new_tokens=4,
               max_retrievals=1)
    text = capsys.readouterr().out
    assert "retrieved:" in text and "Sources" in text and "[1]" in text


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
    assert data["model"] == str(tmp_path / "onegen" / "smollm2-onegen")
    assert len(data["sources"]) == 4 and data["index"] == str(eager_index_dir)


def test_cli_eval_qa(eager_onegen_dir, eager_index_dir, tmp_path):
    from typer.testing import CliRunner

    from unirag.cli.app import app

    res = CliRunner().invoke(app, ["eval", "qa", "--systems", "onegen,closed_book", "--limit", "3", "--model",
                                   str(eager_onegen_dir), "--index", str(eager_index_dir), "--max-new-tokens", "5",
                                   "--out", str(tmp_path / "pred"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["n"] == 3 and set(report["systems"]) == {"onegen", "closed_book"}
    assert report["systems"]["onegen"]["mean_retrievals"] == 4.0
    # the gold evidence are Wikipedia titles, the test index holds ids d0..d9: nothing can be found
    assert report["systems"]["onegen"]["evidence_recall"] == 0.0
    rows = (tmp_path / "pred" / "qa-single-onegen.jsonl").read_text().splitlines()
    assert len(rows) == 3 and len(json.loads(rows[0])["sources"]) == 4
