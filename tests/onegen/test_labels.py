"""Token roles: prompt tokens carry no loss; assistant tokens do, the retrieval token included; the
token right after a retrieval token and inserted passages carry none; the closing end-of-turn does."""

from __future__ import annotations

import pytest

from tests.onegen.helpers import DOCS, example_rows
from unirag.onegen.collator import IGNORE, OneGenCollator, encode_example
from unirag.onegen.config import OneGenConfig
from unirag.onegen.data import parse_example


def _encode(model, row, max_length=None):
    ex = parse_example(row, model.config, DOCS, "mem:1")
    return encode_example(ex, model.tokenizer, model.config, max_length)


def test_labels_exact(onegen_model):
    tok = onegen_model.tokenizer
    rq = onegen_model.token_id("query")
    enc = _encode(onegen_model, example_rows()[0])
    ids, labels = enc.input_ids, enc.labels
    prompt = tok.apply_chat_template(example_rows()[0]["messages"][:1], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert all(lab == IGNORE for lab in labels[:n_prompt])
    # every labelled position is labelled with its own token
    assert all(lab in (IGNORE, i) for lab, i in zip(labels, ids))
    # retrieval tokens: labelled, and the next label masked
    assert enc.ret_pos == [k for k, i in enumerate(ids) if i == rq]
    assert len(enc.ret_pos) == 2
    for k in enc.ret_pos:
        assert labels[k] == rq and labels[k + 1] == IGNORE
    # the text that carries loss is exactly the assistant text minus passages, plus the end of turn
    kept = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert kept == "Who directed Alien?[RQ]Ridley Scott. Where is the Eiffel Tower?[RQ]Paris<|im_end|>"
    masked_assistant = tok.decode([i for i, lab in zip(ids[n_prompt:], labels[n_prompt:]) if lab == IGNORE])
    assert masked_assistant.replace("\n", "") == (
        "<passage>Alien is a 1979 film.</passage><passage>Paris is the capital.</passage>")


def test_first_token_after_retrieval_masked_without_passage(onegen_model):
    row = {"messages": [{"role": "user", "content": "Which river?"},
                        {"role": "assistant", "content": "Look up[RQ] Nile river"}],
           "retrievals": [{"positives": ["Nile"]}]}
    enc = _encode(onegen_model, row)
    k = enc.ret_pos[0]
    assert enc.labels[k + 1] == IGNORE and enc.labels[k + 2] == enc.input_ids[k + 2]


def test_truncation_drops_late_retrievals(onegen_model):
    full = _encode(onegen_model, example_rows()[0])
    cut = _encode(onegen_model, example_rows()[0], max_length=full.ret_pos[1])
    assert len(cut.input_ids) == full.ret_pos[1] and cut.ret_pos == full.ret_pos[:1]
    assert len(cut.retrievals) == 1


def test_collator_dynamic_padding_and_unique_docs(onegen_model):
    rows = [_encode(onegen_model, r) for r in example_rows()]
    col = OneGenCollator(onegen_model.tokenizer, onegen_model.config, DOCS, max_negatives=1)
    b = col(rows)
    assert b["input_ids"].shape[1] == max(len(r.input_ids) for r in rows)
    assert b["attention_mask"].sum(1).tolist() == [len(r.input_ids) for r in rows]
    # 4 retrievals; docs: 4 positives + hard negatives Python, Mount Everest (already a positive) and Nile (also)
    assert b["ret_rows"].tolist() == [0, 0, 1, 2]
    assert b["doc_input_ids"].shape[0] == 5  # each distinct document once
    assert b["pos_mask"].sum().item() == 4 and b["pos_mask"].sum(0).max().item() == 1
    assert b["neg_mask"].sum(1).tolist() == [1, 1, 1, 0]
    # documents end with the document token
    last = b["doc_attention_mask"].sum(1) - 1
    assert (b["doc_input_ids"][range(5), last] == onegen_model.token_id("document")).all()
    # padded label positions carry no loss
    assert (b["labels"][b["attention_mask"] == 0] == IGNORE).all()


def test_prompt_only_example_has_no_labels_in_prompt(onegen_model):
    cfg: OneGenConfig = onegen_model.config
    assert cfg.passage_start == "<passage>" and cfg.passage_end == "</passage>"
    enc = _encode(onegen_model, example_rows()[2])
    first = next(k for k, lab in enumerate(enc.labels) if lab != IGNORE)
    assert enc.input_ids[first] == onegen_model.token_id("query")


@pytest.mark.parametrize("content", ["no token here", "[RQ] and again [RQ]"])
def test_tokenised_count_must_match(onegen_model, content):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}],
           "retrievals": [{"positives": ["Nile"]}]}
    from unirag.onegen.data import OneGenDataError

    with pytest.raises(OneGenDataError, match="retrievals"):
        _encode(onegen_model, row)


def test_answer_without_loss_masks_only_that_reply(onegen_model):
    """``answer_loss: false`` on the first retrieval: its reply (here up to the next retrieval token,
    no line break between the hops) carries no loss; the second answer and the end of turn do."""
    tok = onegen_model.tokenizer
    row = example_rows()[0]
    row = {**row, "retrievals": [{**row["retrievals"][0], "answer_loss": False}, row["retrievals"][1]]}
    enc = _encode(onegen_model, row)
    kept = tok.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])
    assert kept == "Who directed Alien?[RQ][RQ]Paris<|im_end|>"
    assert parse_example(row, onegen_model.config, DOCS, "mem:1").to_dict()["retrievals"][0]["answer_loss"] is False


def test_answer_loss_must_be_boolean(onegen_model):
    from unirag.onegen.data import OneGenDataError

    row = example_rows()[0]
    row = {**row, "retrievals": [{**row["retrievals"][0], "answer_loss": "no"}, row["retrievals"][1]]}
    with pytest.raises(OneGenDataError, match=r"retrievals\[0\]\.answer_loss"):
        _encode(onegen_model, row)


def test_last_answer_without_loss_runs_to_the_line_break(onegen_model):
    tok = onegen_model.tokenizer
    row = {"messages": [{"role": "user", "content": "Which river?"},
                        {"role": "assistant", "content": "Longest?[RQ]<passage>Nile is long.</passage>Nile\nAnswer: Nile"}],
           "retrievals": [{"positives": ["Nile"], "answer_loss": False}]}
    enc = _encode(onegen_model, row)
    kept = tok.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])
    assert kept == "Longest?[RQ]\nAnswer: Nile<|im_end|>"
