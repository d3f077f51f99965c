"""Entity linking: the mention-data rules, span parsing, metrics, the linker and the CLI."""

from __future__ import annotations

import json

import pytest

from unirag.onegen.linking import (EntityLinker, LinkedSpan, Mention, TitleMatcher, find_mentions, linking_examples,
                                   linking_scores, mark, parse_links)

TITLES = ["Leonardo da Vinci", "Mona Lisa", "Florence", "Rain", "Paris", "Paris (mythology)", "Alien (film)",
          "Alien (law)", "Apollo 11", "Moon", "the"]


def test_title_matcher_rules():
    m = TitleMatcher(TITLES)
    text = ("Leonardo da Vinci painted the Mona Lisa in Florence. Douglas Rain lived in Paris and "
            "Paris. Alien is ambiguous; Apollo 11 went to the Moon.")
    found = find_mentions(text, m, own_title="Moon")
    assert [(x.surface, x.entity) for x in found] == [
        ("Leonardo da Vinci", "Leonardo da Vinci"), ("Mona Lisa", "Mona Lisa"), ("Florence", "Florence"),
        ("Paris", "Paris"), ("Apollo 11", "Apollo 11")]
    assert all(text[x.start : x.end] == x.surface for x in found)
    assert mark("Mona Lisa in Paris.", find_mentions("Mona Lisa in Paris.", m), "[RM]") == \
        "<m>Mona Lisa[RM] in <m>Paris[RM]."
    assert [x.entity for x in TitleMatcher(["Alien (film)"]).find("The Alien is here.")] == ["Alien (film)"]


def test_examples_follow_the_onegen_schema():
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.data import parse_example

    summaries = {t: {"extract": f"{t} is linked to Mona Lisa and Florence.", "description": "d"} for t in TITLES}
    rows = linking_examples(summaries, split="train", heldout_fraction=0.0)
    assert rows and all(r["retrievals"] for r in rows)
    for r in rows:
        ex = parse_example({k: r[k] for k in ("id", "messages", "retrievals")}, OneGenConfig(), summaries, "t")
        assert [x.role for x in ex.retrievals] == ["mention"] * len(r["mentions"])
        assert [x.positives[0] for x in ex.retrievals] == [m["entity"] for m in r["mentions"]]
    assert linking_examples(summaries, split="heldout", heldout_fraction=0.0) == []


def test_parse_links_aligns_surfaces(tiny_onegen):
    from unirag.models.decoding import Output, Retrieval

    tok = tiny_onegen.tokenizer
    text = "The Mona Lisa is in Paris, near Paris."
    marked = "The <m>Mona Lisa[RM] is in <m>Paris[RM], near <m>Paris[RM]."
    ids = tok(marked, add_special_tokens=False)["input_ids"]
    rm = tok.convert_tokens_to_ids("[RM]")
    steps = [i for i, t in enumerate(ids) if t == rm]
    trace = [Retrieval(s, 0, [e, "x"], [0.9, 0.1], []) for s, e in zip(steps, ["Mona Lisa", "Paris", "Paris"])]
    out = Output(0, "", "", ids, ids, trace, "stop")
    spans = parse_links(text, out, tok)
    assert [(s.start, s.end, s.surface, s.entity) for s in spans] == [
        (4, 13, "Mona Lisa", "Mona Lisa"), (20, 25, "Paris", "Paris"), (32, 37, "Paris", "Paris")]
    assert spans[0].candidates == [("x", 0.1)]


def test_linking_scores():
    gold = [[Mention(0, 5, "Paris", "Paris"), Mention(10, 15, "Rome", "Rome")], [Mention(0, 4, "Nile", "Nile")]]
    pred = [[LinkedSpan(0, 5, "Paris", "Paris", 0.9), LinkedSpan(10, 15, "Rome", "Roma", 0.5),
             LinkedSpan(20, 22, "xx", "X", 0.1)], []]
    m = linking_scores(pred, gold)
    assert m["precision"] == pytest.approx(100 / 3) and m["recall"] == pytest.approx(100 / 3)
    assert m["mention_precision"] == pytest.approx(200 / 3) and m["mention_recall"] == pytest.approx(200 / 3)
    assert m["disambiguation_accuracy"] == pytest.approx(50.0)


# A case worked out by hand: 4 gold mentions in 2 documents, 3 predicted spans, all 3 at gold
# positions, 2 of them with the right entity.
HAND_GOLD = [[Mention(0, 5, "Paris", "Paris"), Mention(10, 14, "Rome", "Rome"), Mention(20, 25, "Alien", "Alien (film)")],
             [Mention(0, 4, "Nile", "Nile")]]
HAND_PRED = [[LinkedSpan(0, 5, "Paris", "Paris", 0.9), LinkedSpan(20, 25, "Alien", "Alien (law)", 0.4)],
             [LinkedSpan(0, 4, "Nile", "Nile", 0.8)]]


def test_linking_scores_on_a_hand_worked_case():
    m = linking_scores(HAND_PRED, HAND_GOLD)
    # (span, entity) right: Paris, Nile -> P = 2/3, R = 2/4, F1 = 2 P R / (P + R) = 4/7
    assert m["precision"] == pytest.approx(200 / 3) and m["recall"] == pytest.approx(50.0)
    assert m["f1"] == pytest.approx(400 / 7)                          # 57.14
    # spans alone: all 3 predicted spans are gold spans -> P = 1, R = 3/4, F1 = 6/7
    assert m["mention_precision"] == pytest.approx(100.0) and m["mention_recall"] == pytest.approx(75.0)
    assert m["mention_f1"] == pytest.approx(600 / 7)
    # of the 3 detected spans, Alien is linked to the wrong entity
    assert m["disambiguation_accuracy"] == pytest.approx(200 / 3)
    assert (m["n_docs"], m["n_gold"], m["n_pred"]) == (2, 4, 3)
    empty = linking_scores([[], []], HAND_GOLD)
    assert (empty["precision"], empty["recall"], empty["f1"], empty["disambiguation_accuracy"]) == (0, 0, 0, 0)


def test_entity_index_and_linker(eager_linker_dir, tmp_path):
    from unirag.onegen.docindex import open_onegen_index
    from unirag.onegen.linking import build_entity_index
    from unirag.onegen.model import OneGenModel

    og = OneGenModel.from_pretrained(eager_linker_dir)
    kb = {t: {"extract": f"{t} is an entity.", "description": "a thing"} for t in TITLES}
    folder = build_entity_index(tmp_path / "kb", og, name="eager", progress=False, summaries=kb)
    index = open_onegen_index(folder, og, role="entity")
    assert index.index.manifest.encoder_info["role"] == "entity"
    assert index.store.get("Mona Lisa").contents == "Mona Lisa. a thing. Mona Lisa is an entity."
    linker = EntityLinker(og, index, candidates=3, max_mentions=4)
    spans = linker.link(["Mona Lisa is in Paris.", "Rain"], batch_size=2)
    assert [len(s) for s in spans] == [4, 4]  # the eager model emits the mention token until banned
    for s in spans[0]:
        assert s.entity in kb and len(s.candidates) == 2 and s.score >= s.candidates[0][1]


def test_cli_link_and_index(eager_linker_dir, tmp_path):
    from typer.testing import CliRunner

    from unirag.cli.app import app

    runner = CliRunner()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": t, "title": t, "text": f"About {t}."}) + "\n" for t in TITLES))
    res = runner.invoke(app, ["index", "onegen", str(tmp_path / "idx"), "--corpus", str(corpus),
                              "--model", str(eager_linker_dir)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["encoder"].startswith("onegen:model@") and manifest["count"] == len(TITLES)
    res = runner.invoke(app, ["link", "Mona Lisa is in Paris.", "--model", str(eager_linker_dir),
                              "--index", str(tmp_path / "idx"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["text"] == "Mona Lisa is in Paris." and data["entities"]
    assert all(e["entity"] in TITLES for e in data["entities"])


def test_cli_eval_linking(eager_linker_dir, tmp_path, monkeypatch):
    """The command scores the linker's output on the held-out documents: with the documents and the
    linker's answer fixed to the hand-worked case, the report carries its numbers."""
    from typer.testing import CliRunner

    import unirag.onegen.linking as L
    from unirag.cli.app import app

    texts = ["Paris and Rome and Alien.", "Nile."]
    seen = {}

    def link(self, docs, batch_size=8):
        seen["texts"] = list(docs)
        return HAND_PRED

    monkeypatch.setattr(L, "heldout_linking_docs", lambda limit=None: list(zip(texts, HAND_GOLD))[:limit])
    monkeypatch.setattr(L.EntityLinker, "link", link)

    kb = tmp_path / "kb.jsonl"
    kb.write_text("".join(json.dumps({"id": t, "title": t, "text": f"About {t}."}) + "\n" for t in TITLES))
    runner = CliRunner()
    assert runner.invoke(app, ["index", "onegen", str(tmp_path / "kb"), "--corpus", str(kb),
                               "--model", str(eager_linker_dir)]).exit_code == 0
    res = runner.invoke(app, ["eval", "linking", "--limit", "2", "--model", str(eager_linker_dir),
                              "--index", str(tmp_path / "kb"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert seen["texts"] == texts
    assert (report["n_docs"], report["n_gold"], report["n_pred"]) == (2, 4, 3)
    assert report["precision"] == pytest.approx(200 / 3) and report["recall"] == pytest.approx(50.0)
    assert report["f1"] == pytest.approx(400 / 7) and report["disambiguation_accuracy"] == pytest.approx(200 / 3)


def test_best_threshold_on_the_hand_worked_case():
    from unirag.onegen.linking import best_threshold, keep_above

    # dropping Alien (0.4, wrong entity) keeps Paris and Nile: P = 1, R = 2/4, F1 = 2/3; a threshold
    # of 0.9 would keep Paris alone (F1 = 0.4)
    t, f1 = best_threshold(HAND_PRED, HAND_GOLD)
    assert t == pytest.approx(0.8) and f1 == pytest.approx(200 / 3)
    assert [len(d) for d in (keep_above(HAND_PRED[0], t), keep_above(HAND_PRED[1], t))] == [1, 1]
    assert keep_above(HAND_PRED[0], None) == HAND_PRED[0]
    assert best_threshold([[LinkedSpan(0, 5, "Paris", "Paris", 0.2)]], [[Mention(0, 5, "Paris", "Paris")]]) == (
        None, pytest.approx(100.0))


def test_tuned_threshold_is_saved_and_used_without_changing_the_model_fingerprint(eager_linker_dir, tmp_path,
                                                                                  monkeypatch):
    """``eval linking --tune`` fits the threshold on development documents (the linker's answer fixed
    to the hand-worked case), saves it into the model folder and reports held-out figures with and
    without it; the model's index name (fingerprint) does not change, so its indexes are kept."""
    import shutil

    from typer.testing import CliRunner

    import unirag.onegen.linking as L
    from unirag.cli.app import app
    from unirag.onegen.docindex import model_fingerprint

    model = tmp_path / "model"
    shutil.copytree(eager_linker_dir, model)
    before = model_fingerprint(model)
    texts = ["Paris and Rome and Alien.", "Nile."]
    monkeypatch.setattr(L, "heldout_linking_docs", lambda limit=None: list(zip(texts, HAND_GOLD))[:limit])
    asked = {}

    def dev(exclude, limit=120, seed=0):
        asked["exclude"] = exclude
        return list(zip(texts, HAND_GOLD))

    monkeypatch.setattr(L, "dev_linking_docs", dev)
    monkeypatch.setattr(L.EntityLinker, "link", lambda self, docs, batch_size=8: HAND_PRED)
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "el:Paris"}) + "\n" + json.dumps({"id": "q1#0"}) + "\n")
    kb = tmp_path / "kb.jsonl"
    kb.write_text("".join(json.dumps({"id": t, "title": t, "text": f"About {t}."}) + "\n" for t in TITLES))
    runner = CliRunner()
    assert runner.invoke(app, ["index", "onegen", str(tmp_path / "kb"), "--corpus", str(kb),
                               "--model", str(model)]).exit_code == 0
    args = ["eval", "linking", "--model", str(model), "--index", str(tmp_path / "kb"), "--json"]
    res = runner.invoke(app, [*args, "--tune", "--train-file", str(train)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert asked["exclude"] == {"el:Paris", "q1#0"}
    assert report["tuned"]["threshold"] == pytest.approx(0.8) and report["threshold"] == pytest.approx(0.8)
    assert report["f1"] == pytest.approx(200 / 3) and report["without_threshold"]["f1"] == pytest.approx(400 / 7)
    assert L.read_threshold(model) == pytest.approx(0.8)
    assert model_fingerprint(model) == before
    res = runner.invoke(app, args)     # later runs use the saved threshold
    assert json.loads(res.stdout)["f1"] == pytest.approx(200 / 3)
    res = runner.invoke(app, [*args, "--tune", "--train-file", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "--train-file" in res.output


def test_cli_eval_linking_refuses_to_tune_the_packaged_adapter(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from unirag.cli.app import app
    from unirag.onegen.model import ASSET_DIR

    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))  # no trained model: the packaged adapter
    train = tmp_path / "train.jsonl"
    train.write_text("{}\n")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ASSET_DIR.iterdir() if p.is_file()}
    for model in ([], ["--model", str(ASSET_DIR)]):
        res = CliRunner().invoke(app, ["eval", "linking", "--tune", "--train-file", str(train), *model])
        text = " ".join(res.output.replace("│", " ").split())  # the error box wraps at the terminal's width
        assert res.exit_code == 2 and "is the packaged adapter" in text and "--model" in text
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ASSET_DIR.iterdir() if p.is_file()} == before


def test_tune_threshold_refuses_the_packaged_adapter_before_any_work(tmp_path):
    from unirag.config.base import ConfigError
    from unirag.onegen.linking import tune_threshold
    from unirag.onegen.model import ASSET_DIR

    with pytest.raises(ConfigError, match="packaged adapter"):
        tune_threshold(None, ASSET_DIR, tmp_path / "not-read.jsonl")  # no linker is needed to refuse
