"""The packaged OneGen training set: hop grouping, LM-only retrievals, passages cut as inference cuts
them, the held-out leak check, and the one-command recipe building its data."""

from __future__ import annotations

import json

import pytest
import torch

from unirag.corpus import Passage
from unirag.data.fanoutqa import FanOutLeaf, FanOutQuestion
from unirag.models.decoding import cut_words
from unirag.onegen.config import OneGenConfig
from unirag.onegen.datasets import (OneGenDataConfig, answer_text, fanoutqa_examples, hop_groups, leak_report,
                                    passage_span)

WORDS = " ".join(f"w{i}" for i in range(60))
CORPUS = {t: Passage(t, f"{t} text {WORDS}", t) for t in ("P1", "P2", "P3", "P4", "P5", "Other")}


def _question(present: int, absent: int) -> FanOutQuestion:
    leaves = []
    for i in range(present + absent):
        page = f"P{i + 1}" if i < present else f"Missing{i}"
        leaves.append(FanOutLeaf(f"l{i}", f"sub-question {i}?", [f"a{i}"], page, "q"))
    leaves = leaves[present:] [:1] + leaves[:present] + leaves[present + 1:]  # an absent leaf first
    return FanOutQuestion("q", "Top question?", ["final"], leaves)


def test_hop_groups_fill_with_leaves_outside_the_corpus_in_decomposition_order():
    q = _question(present=5, absent=3)
    groups = hop_groups(q, CORPUS, max_hops=4, fill=True)
    assert [len(g) for g in groups] == [4, 4]
    assert sum(lf.evidence_title in CORPUS for g in groups for lf in g) == 5   # every corpus leaf once
    order = [lf.id for lf in q.leaves]
    for g in groups:
        assert [order.index(lf.id) for lf in g] == sorted(order.index(lf.id) for lf in g)
    assert [[lf.id for lf in g] for g in hop_groups(q, CORPUS, 4, fill=False)] == [["l0", "l1", "l2", "l3"], ["l4"]]
    only_absent = _question(present=0, absent=3)
    assert [len(g) for g in hop_groups(only_absent, CORPUS, 4, fill=True)] == [3]
    assert hop_groups(only_absent, CORPUS, 4, fill=False) == []
    kept = hop_groups(q, CORPUS, 4, fill=True, exclude=lambda lf: lf.evidence_title == "P2")
    assert "P2" not in {lf.evidence_title for g in kept for lf in g}


def test_multihop_examples_supervise_corpus_hops_and_train_the_others_by_lm_alone():
    cfg = OneGenConfig()
    q = _question(present=2, absent=2)
    fill = {lf.id: "Other" for lf in q.leaves if lf.evidence_title not in CORPUS}
    (ex,) = fanoutqa_examples([q], CORPUS, cfg, passage_words=48, max_hops=4, fill=True, fill_passages=fill)
    reply = ex.messages[1]["content"]
    assert reply.count(cfg.token("query")) == 4 == len(ex.retrievals)
    positives = [r.positives for r in ex.retrievals]
    titles = [lf.evidence_title for lf in q.leaves]
    assert positives == [[t] if t in CORPUS else [] for t in titles]
    assert reply.endswith("Answer: final")
    # the inserted passage is exactly what inference inserts for the same passage and word budget
    assert passage_span(CORPUS["P1"], cfg, 48) == f"<passage>{cut_words(CORPUS['P1'].contents, 48)}</passage>"
    assert passage_span(CORPUS["P1"], cfg, 48) in reply and passage_span(CORPUS["Other"], cfg, 48) in reply
    assert cut_words(CORPUS["P1"].contents, 48).endswith(" ...")


def test_supported_answer_loss_marks_answers_the_passage_does_not_hold():
    """``answer_loss="supported"``: a hop answer carries LM loss only if its inserted passage (as cut)
    holds it; the default keeps every answer's loss."""
    from unirag.onegen.datasets import leaf_examples

    cfg = OneGenConfig()
    corpus = dict(CORPUS, P1=Passage("P1", f"P1 was founded by a0 {WORDS}", "P1"),
                  P2=Passage("P2", f"P2 text {WORDS} a1", "P2"))   # a1 lies past the first 48 words
    q = _question(present=2, absent=0)
    (ex,) = fanoutqa_examples([q], corpus, cfg, passage_words=48, supported_only=True)
    assert [r.answer_loss for r in ex.retrievals] == [True, False]
    (full,) = fanoutqa_examples([q], corpus, cfg, passage_words=None, supported_only=True)
    assert [r.answer_loss for r in full.retrievals] == [True, True]
    (plain,) = fanoutqa_examples([q], corpus, cfg, passage_words=48)
    assert all(r.answer_loss for r in plain.retrievals)
    singles = leaf_examples([q], corpus, cfg, 48, supported_only=True)
    assert [e.retrievals[0].answer_loss for e in singles] == [True, False]
    assert singles[1].to_dict()["retrievals"][0]["answer_loss"] is False
    with pytest.raises(ValueError, match="answer_loss"):
        OneGenDataConfig(answer_loss="some")


def test_answer_lists_are_capped():
    leaf = FanOutLeaf("l", "Who?", [f"n{i}" for i in range(9)], "P1", "q")
    assert answer_text(leaf, 3) == "n0, n1, n2, ..."
    assert answer_text(leaf, 20) == ", ".join(f"n{i}" for i in range(9))


def test_an_lm_only_retrieval_loads_and_adds_no_contrastive_term(tmp_path):
    from unirag.onegen.losses import contrastive_loss
    from unirag.onegen.data import load_examples

    row = {"id": "x", "messages": [{"role": "user", "content": "Q?"},
                                   {"role": "assistant", "content": "a[RQ]<passage>t</passage>b[RQ]<passage>u</passage>c"}],
           "retrievals": [{"positives": ["P1"]}, {"positives": []}]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (ex,) = load_examples(path, OneGenConfig(), {"P1": "p", "P2": "q"})
    assert ex.retrievals[1].positives == []
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 8, generator=g), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(2, 8, generator=g), dim=-1)
    pos = torch.tensor([[True, False], [False, False]])
    none = torch.zeros_like(pos)
    cand = torch.ones_like(pos)
    for kind in ("infonce", "bpr"):
        both = contrastive_loss(q, d, pos, none, cand, kind)
        first = contrastive_loss(q[:1], d, pos[:1], none[:1], cand[:1], kind)
        # logits are 8-term float32 dot products over a 0.05 temperature (|logit| <= 20): a
        # different matmul shape may move them by a few units of 20 * 2**-23 ~ 2.4e-6
        torch.testing.assert_close(both, first, rtol=0, atol=1e-5)


def test_contrastive_loss_runs_in_float32_under_autocast():
    from unirag.onegen.losses import contrastive_loss

    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(5, 64, generator=g), dim=-1)
    pos = torch.zeros(3, 5, dtype=torch.bool)
    pos[0, 0] = pos[1, 2] = pos[2, 4] = True
    cand = torch.ones_like(pos)
    plain = contrastive_loss(q, d, pos, torch.zeros_like(pos), cand, "infonce")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = contrastive_loss(q, d, pos, torch.zeros_like(pos), cand, "infonce")
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


def test_leak_report_counts_each_kind_of_leak():
    from unirag.onegen.data import OneGenExample, Retrieval

    held = [FanOutQuestion("h", "Held top?", ["x"], [FanOutLeaf("hl", "Held sub?", ["y"], "P3", "h")])]
    cfg = OneGenConfig()
    clean = OneGenExample([{"role": "user", "content": "Q?"},
                           {"role": "assistant", "content": "[RQ]<passage>P1. text</passage>a"}], [Retrieval(["P1"])], "c")
    assert not any(leak_report([clean], held, cfg).values())
    bad = [OneGenExample([{"role": "user", "content": "Held sub?"},
                          {"role": "assistant", "content": "[RQ]<passage>P3. text</passage>a"}], [Retrieval(["P3"])], "b"),
           OneGenExample([{"role": "user", "content": "x"}, {"role": "assistant", "content": "<m>Foo[RM]"}],
                         [Retrieval(["entity:P3"], [], "mention")], "el:P3")]
    rep = leak_report(bad, held, cfg)
    assert rep == {"positives": 1, "inserted": 1, "questions": 1, "linking_examples_of_heldout_pages": 1,
                   "linking_mentions_of_heldout_pages": 1}


def test_data_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_hops"):
        OneGenDataConfig(max_hops=0)
    with pytest.raises(ValueError, match="linking"):
        OneGenDataConfig(linking=-1)


def test_the_recipe_builds_its_data_once_per_setting(tmp_path, monkeypatch):
    """``data`` in the training config builds the packaged data before training, and again only
    when the settings change."""
    import unirag.onegen.datasets as ds
    from unirag.train.onegen import OneGenTrainConfig, ensure_data

    calls = []

    def fake_build(out, data, config=None):
        calls.append(data.to_dict())
        for name in ("train.jsonl", "docs.jsonl", "heldout.jsonl"):
            (out / name).write_text("")
        (out / "data_summary.json").write_text(json.dumps({"data": data.to_dict()}))
        return {}

    monkeypatch.setattr(ds, "build_onegen_data", fake_build)
    folder = tmp_path / "data"
    folder.mkdir()
    cfg = OneGenTrainConfig(train_file=str(folder / "train.jsonl"), docs_file=str(folder / "docs.jsonl"),
                            eval_file=str(folder / "heldout.jsonl"), data=OneGenDataConfig(linking=10))
    assert ensure_data(cfg, say=lambda *a: None) is True
    assert ensure_data(cfg, say=lambda *a: None) is False
    cfg.data = OneGenDataConfig(linking=20)
    assert ensure_data(cfg, say=lambda *a: None) is True
    assert [c["linking"] for c in calls] == [10, 20]
    cfg.docs_file = str(tmp_path / "elsewhere.jsonl")
    from unirag.config.base import ConfigError

    with pytest.raises(ConfigError, match="one folder"):
        ensure_data(cfg)
    # the YAML round trip keeps the data section
    path = tmp_path / "cfg.yaml"
    cfg.save(path)
    assert OneGenTrainConfig.load(path).data == OneGenDataConfig(linking=20)


def test_packaged_data_is_leak_free_and_cut_like_inference(tmp_path):
    """The real build (FanOutQA x Wikipedia, no linking, no negatives to keep it short)."""
    from unirag.onegen.datasets import build_onegen_data
    from unirag.onegen.engine import OneGenEngine

    summary = build_onegen_data(tmp_path, OneGenDataConfig(linking=0, negatives=0, reading=40))
    assert not any(summary["leaks"].values()) and summary["counts"]["train_reading"] == 40
    figures = summary["figures"]
    assert figures["query_retrievals_lm_only"] > 0 and figures["query_retrievals_supervised"] > 0
    assert max(int(h) for h in figures["hops_per_multihop_example"]) == 4
    assert summary["counts"]["passage_words"] == OneGenConfig().passage_words
    # inference cuts inserted passages to the model config's passage_words
    engine = OneGenEngine(type("M", (), {"config": OneGenConfig(passage_words=40)})(), None)
    from unirag.sampling_params import SamplingParams

    assert engine._params(SamplingParams()).max_passage_words == 40
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert all(r["id"].split(":")[0] in ("desc", "leaf", "read") or "#" in r["id"] for r in rows)
    # a reading example's answer is in the passage it inserts, and the patterns take turns
    from unirag.data.qa import answer_in_text

    read = [r for r in rows if r["id"].startswith("read:")]
    assert len(read) == 40
    for r in read:
        reply = r["messages"][1]["content"]
        passage, answer = reply.split("<passage>", 1)[1].split("</passage>")
        assert answer and answer_in_text(passage, answer) and r["retrievals"][0]["positives"] == [r["id"][5:]]
    assert len({r["messages"][0]["content"].split()[:3][-1] for r in read}) >= 5
