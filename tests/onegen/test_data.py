"""The OneGen JSONL schema: valid files load; each kind of error names file, line and field.
Converters (HotpotQA, 2WikiMultiHopQA, Self-RAG) on small files, and BM25 hard-negative mining."""

from __future__ import annotations

import json

import pytest

from tests.onegen.helpers import DOCS, example_rows
from unirag.onegen.config import OneGenConfig
from unirag.onegen.data import OneGenDataError, load_documents, load_examples, write_documents


def _write(tmp_path, rows, name="train.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_valid_file_loads(tmp_path):
    ex = load_examples(_write(tmp_path, example_rows()), OneGenConfig(), DOCS)
    assert [len(e.retrievals) for e in ex] == [2, 1, 1]
    assert ex[0].retrievals[1].positives == ["Paris"] and ex[0].retrievals[1].negatives == ["Nile"]
    assert ex[0].retrievals[0].role == "query"


def _broken(tmp_path, mutate):
    rows = example_rows()
    mutate(rows)
    return _write(tmp_path, rows)


@pytest.mark.parametrize("mutate, field, msg", [
    (lambda r: r[1]["retrievals"].append({"positives": ["Nile"]}), "retrievals", "2 entries but"),
    (lambda r: r[1]["messages"][1].update(content="The Nile"), "retrievals", "1 entries but the assistant text has 0"),
    (lambda r: r[1]["retrievals"][0].update(positives=["Atlantis"]), "retrievals[0].positives[0]", "unknown document id"),
    (lambda r: r[1]["retrievals"][0].update(negatives=["Nile", "Atlantis"]), "retrievals[0].negatives[1]", "unknown document"),
    (lambda r: r[1]["retrievals"][0].pop("positives"), "retrievals[0].positives", "required"),
    (lambda r: r[1].pop("messages"), "messages", "required"),
    (lambda r: r[1]["messages"].pop(1), "messages", "no assistant"),
    (lambda r: r[1]["messages"][0].update(content="[RQ] in the question"), "messages[0].content", "only in assistant"),
    (lambda r: r[1].update(extra=1), "extra", "unknown field"),
])
def test_errors_name_file_line_field(tmp_path, mutate, field, msg):
    path = _broken(tmp_path, mutate)
    with pytest.raises(OneGenDataError) as err:
        load_examples(path, OneGenConfig(), DOCS)
    text = str(err.value)
    assert text.startswith(f"{path}:2: field '{field}'") and msg in text


def test_bad_json_line(tmp_path):
    path = _write(tmp_path, [example_rows()[0], "{not json"])
    with pytest.raises(OneGenDataError, match=rf"{path}:2: invalid JSON"):
        load_examples(path, OneGenConfig(), DOCS)


def test_documents_roundtrip(tmp_path):
    write_documents({"Nile": ("Nile", "A river.")}, tmp_path / "docs.jsonl")
    assert load_documents(tmp_path / "docs.jsonl") == {"Nile": "Nile. A river."}


HOTPOT = [{
    "_id": "h1", "question": "Which country is the city where Alien's director was born in?", "answer": "England",
    "type": "bridge",
    "supporting_facts": [["Alien (film)", 0], ["Ridley Scott", 1], ["Ridley Scott", 0]],
    "context": [["Alien (film)", ["Alien is a 1979 film directed by Ridley Scott.", " It stars Sigourney Weaver."]],
                ["Ridley Scott", ["Sir Ridley Scott is a director.", " He was born in South Shields, England."]],
                ["Nile", ["The Nile is a river."]], ["Paris", ["Paris is in France."]]],
}]


@pytest.mark.parametrize("name", ["hotpot.json", "2wiki.jsonl"])
def test_multihop_converter(tmp_path, name):
    from unirag.onegen.converters import convert_multihop

    src = tmp_path / name
    src.write_text(json.dumps(HOTPOT) if name.endswith(".json") else json.dumps(HOTPOT[0] | {"evidences": []}) + "\n")
    counts = convert_multihop(src, tmp_path / "out", max_negatives=2)
    assert counts == {"examples": 1, "retrievals": 2, "documents": 6}
    docs = load_documents(tmp_path / "out" / "docs.jsonl")
    ex = load_examples(tmp_path / "out" / "train.jsonl", OneGenConfig(), docs)[0]
    assert ex.retrievals[0].positives == ["Alien (film)#0"]
    assert ex.retrievals[1].positives == ["Ridley Scott#1", "Ridley Scott#0"]
    assert ex.retrievals[1].negatives == ["Nile#0", "Paris#0"]
    assert ex.messages[1]["content"].endswith("</passage>England")
    assert docs["Ridley Scott#1"] == "Ridley Scott. He was born in South Shields, England."


def test_multihop_converter_rejects_unknown_fact(tmp_path):
    from unirag.onegen.converters import convert_multihop

    bad = [dict(HOTPOT[0], supporting_facts=[["Atlantis", 0]])]
    (tmp_path / "h.json").write_text(json.dumps(bad))
    with pytest.raises(OneGenDataError, match=r"h.json:1: field 'supporting_facts'"):
        convert_multihop(tmp_path / "h.json", tmp_path / "out")


def test_selfrag_converter(tmp_path):
    from unirag.onegen.converters import convert_selfrag

    rows = [{"id": "s1", "instruction": "Who directed Alien?", "input": "",
             "output": "[Retrieval]<paragraph>Alien is a 1979 film directed by Ridley Scott.</paragraph>[Relevant]"
                       "Ridley Scott.[Fully supported][Utility:5]"},
            {"id": "s2", "instruction": "Say hi.", "output": "[No Retrieval]Hi![Utility:5]"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert convert_selfrag(tmp_path / "s.jsonl", tmp_path / "o")["retrievals"] == 1
    docs = load_documents(tmp_path / "o" / "docs.jsonl")
    ex = load_examples(tmp_path / "o" / "train.jsonl", OneGenConfig(), docs)
    assert ex[0].messages[1]["content"].startswith("[Retrieval][RQ]<passage>Alien is a 1979")
    assert docs[ex[0].retrievals[0].positives[0]] == "Alien is a 1979 film directed by Ridley Scott."
    assert ex[1].retrievals == []
    convert_selfrag(tmp_path / "s.jsonl", tmp_path / "o2", keep_reflection=False)
    plain = load_examples(tmp_path / "o2" / "train.jsonl", OneGenConfig(), None)
    assert plain[0].messages[1]["content"] == "[RQ]<passage>Alien is a 1979 film directed by Ridley Scott.</passage>" \
                                             "Ridley Scott."


def test_bm25_mining_finds_lexical_neighbours(tmp_path):
    from unirag.onegen.mining import mine_bm25_negatives, retrieval_queries

    docs = {"a": "The Nile river flows through Egypt.", "b": "The Amazon river flows through Brazil.",
            "c": "Paris is the capital of France.", "d": "Rivers of Egypt include the Nile."}
    rows = [{"messages": [{"role": "user", "content": "Name the river in Egypt."},
                          {"role": "assistant", "content": "Which river is in Egypt?[RQ]<passage>x</passage>Nile. "
                                                           "And France's capital?[RQ]<passage>y</passage>Paris"}],
             "retrievals": [{"positives": ["a"]}, {"positives": ["c"]}]}]
    ex = load_examples(_write(tmp_path, rows), OneGenConfig(), docs)
    assert retrieval_queries(ex[0], OneGenConfig()) == ["Which river is in Egypt?",
                                                         "Nile. And France's capital?"]
    mine_bm25_negatives(ex, docs, k=1)
    assert ex[0].retrievals[0].negatives == ["d"]
    assert "c" not in ex[0].retrievals[1].negatives and len(ex[0].retrievals[1].negatives) <= 1


def test_model_mining_and_contexts(onegen_model, tmp_path):
    from unirag.onegen.mining import mine_model_negatives, retrieval_contexts

    ex = load_examples(_write(tmp_path, example_rows()), onegen_model.config, DOCS)
    ctx = retrieval_contexts(ex[0], onegen_model.tokenizer, onegen_model.config)
    assert len(ctx) == 2 and all(c.endswith("[RQ]") for c in ctx) and "Ridley Scott. Where" in ctx[1]
    mine_model_negatives(onegen_model, ex, DOCS, k=2)
    for e in ex:
        for r in e.retrievals:
            assert len(r.negatives) >= 2 and not set(r.negatives) & set(r.positives)


def test_packaged_sub_question_and_linking_examples():
    from unirag.data import fanoutqa_split, wiki_passages
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.data import parse_example
    from unirag.onegen.datasets import ENTITY_PREFIX, leaf_examples, linking_training_examples

    cfg = OneGenConfig()
    train_q, held_q = fanoutqa_split()
    corpus = {p.id: p for p in wiki_passages()}
    held_titles = {leaf.evidence_title for q in held_q for leaf in q.leaves}
    leaves = leaf_examples(train_q, corpus, cfg, 16, exclude=held_titles)
    assert leaves and all(ex.retrievals[0].positives[0] not in held_titles for ex in leaves)
    first = leaves[0].messages[1]["content"]
    assert first.startswith("[RQ]<passage>") and "</passage>" in first
    assert len(leaf_examples(train_q, corpus, cfg, 16)) > len(leaves)  # the exclusion removed some
    examples, docs = linking_training_examples(6, cfg, seed=1)
    assert len(examples) == 6 and all(k.startswith(ENTITY_PREFIX) for k in docs)
    for ex in examples:
        parsed = parse_example(ex.to_dict(), cfg, {k: v[1] for k, v in docs.items()}, "t")
        assert [r.role for r in parsed.retrievals] == ["mention"] * len(ex.retrievals)
        assert ex.messages[1]["content"].count("[RM]") == len(ex.retrievals)
    again, _ = linking_training_examples(6, cfg, seed=1)
    assert [e.id for e in again] == [e.id for e in examples]
