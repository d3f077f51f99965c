"""RagModel on tiny random parts: losses, gradients to the query encoder only through p(z|x),
save/load round trip, index hot-swap, answers with attribution."""

from __future__ import annotations

import pytest
import torch
from conftest import QUESTIONS, make_rag

from tests.tolerance import assert_f32_close, model_terms
from unirag.rag import marginals as M
from unirag.rag.scoring import context_logits

QS = [q for q, _ in QUESTIONS[:3]]
ANS = [a for _, a in QUESTIONS[:3]]


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
@pytest.mark.parametrize("variant", ["token", "sequence"])
def test_loss_equals_reference_and_trains_query_encoder(tiny_index, kind, variant):
    model = make_rag(kind, tiny_index[0])
    out = model(QS, ANS, variant=variant, reduction="none")
    ctx = model.contexts(QS, out.retrieved.passages)
    logits = context_logits(model.generator, ctx, out.target)[:, 0]
    ref = (M.rag_token_nll_reference(logits, out.doc_scores, out.target, out.mask) if variant == "token"
           else M.rag_sequence_nll_reference(logits, out.doc_scores, out.target, out.mask))
    t = out.target.shape[-1]
    assert_f32_close(out.loss, ref, model_terms(model.generator, ctx.input_ids.shape[1] + t) + t + out.doc_scores.shape[1])
    out.loss.sum().backward()
    q_grad = sum(float(p.grad.abs().sum()) for p in model.query_model.parameters() if p.grad is not None)
    assert q_grad > 0
    # doc scores are q·d with the index's stored vectors
    q = model.question_encoder.embed(QS).detach()
    d = torch.from_numpy(model.retriever.index.reconstruct(torch.tensor(out.retrieved.rows).numpy()))
    # a dot product over the embedding width, at the scale of sum |q_i d_i|
    assert_f32_close(out.doc_scores.detach(), torch.einsum("bd,bkd->bk", q, d), q.shape[-1],
                     magnitude=float(torch.einsum("bd,bkd->bk", q.abs(), d.abs()).max()))


def test_frozen_retriever_gets_no_gradient(tiny_index):
    model = make_rag("seq2seq", tiny_index[0], freeze_question_encoder=True)
    model(QS, ANS).loss.backward()
    assert all(p.grad is None for p in model.query_model.parameters())
    assert any(p.grad is not None for p in model.generator.parameters())


def test_causal_answer_positions_match_plain_lm(tiny_index):
    """With one document the RAG loss is the generator's own LM loss on the answer tokens."""
    model = make_rag("causal", tiny_index[0], n_docs=1)
    out = model(QS[:1], ANS[:1], reduction="none")
    text = model.builder.text(QS[0], out.retrieved.passages[0][0])
    tok = model.tokenizer
    prompt = tok(text, return_tensors="pt")["input_ids"]
    full = torch.cat([prompt, out.target], 1)
    logits = model.generator(input_ids=full).logits[0, prompt.shape[1] - 1 : -1]
    want = torch.nn.functional.cross_entropy(logits, out.target[0], reduction="sum")
    t = out.target.shape[1]
    assert_f32_close(out.loss[0], want, model_terms(model.generator, full.shape[1]) + t)


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_save_and_load_round_trip(tiny_index, tmp_path, kind):
    from transformers import AutoModel

    from unirag.rag.model import RagModel

    model = make_rag(kind, tiny_index[0])
    model.eval()
    want = model(QS, ANS).loss
    model.save_pretrained(tmp_path / "rag")
    back = RagModel.from_pretrained(tmp_path / "rag")
    back.eval()
    # the same weights through the same kernels and shapes: exactly the same loss
    assert torch.equal(back(QS, ANS).loss, want)
    assert back.config.variant == model.config.variant
    # each part loads on its own, hub-style
    AutoModel.from_pretrained(tmp_path / "rag" / "question_encoder")
    auto = "AutoModelForSeq2SeqLM" if kind == "seq2seq" else "AutoModelForCausalLM"
    getattr(__import__("transformers"), auto).from_pretrained(tmp_path / "rag" / "generator")


def test_hot_swap_changes_retrieved_passages_without_reload(tiny_index):
    model = make_rag("seq2seq", tiny_index[0], n_docs=10)
    gen_id = id(model.generator)
    before = {p.id: p.text for p in model.retrieve(QS[:1]).passages[0]}
    model.swap_index(tiny_index[1])
    after = {p.id: p.text for p in model.retrieve(QS[:1]).passages[0]}
    assert id(model.generator) == gen_id and model.config.index == str(tiny_index[1])
    assert "Paris is" in before["Paris"] and "Amsterdam is" in after["Paris"]


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_generate_with_attribution(tiny_index, kind):
    model = make_rag(kind, tiny_index[0])
    for variant, decoding in [("token", "greedy"), ("token", "beam"), ("token", "sample"),
                              ("sequence", "thorough"), ("sequence", "fast")]:
        res = model.generate(QS[:2], variant=variant, decoding=decoding, num_beams=2, max_new_tokens=5)
        assert len(res) == 2
        for r in res:
            assert len(r.passages) == 3 and r.tokens
            # distributions over 3 documents normalised in float32: exp(x - logsumexp(x)) then a sum of 3.
            # Rounding in the log-probs themselves cancels (the normaliser is computed from them)
            assert_f32_close(sum(r.doc_prior), 1.0, 3 + 3, magnitude=1.0)
            assert_f32_close(sum(r.doc_posterior), 1.0, 3 + 3, magnitude=1.0)
            assert len(r.token_posteriors) == len(r.tokens)
            for p in r.token_posteriors:
                assert_f32_close(sum(p), 1.0, 3 + 3, magnitude=1.0)
    with pytest.raises(ValueError):
        model.generate(QS[:1], variant="sequence", decoding="greedy")
