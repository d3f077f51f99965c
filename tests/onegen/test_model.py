"""OneGenModel on a tiny random Llama: the training loss equals a plain reference built from an
ordinary transformers forward; vectors are the post-norm hidden states at the token positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.onegen.helpers import DOCS, example_rows
from tests.onegen.reference import ref_bpr, ref_infonce
from tests.tolerance import assert_f32_close, model_terms
from unirag.onegen.collator import OneGenCollator, encode_example
from unirag.onegen.data import parse_example


def _batch(model, max_negatives=1):
    rows = [encode_example(parse_example(r, model.config, DOCS, "m"), model.tokenizer, model.config)
            for r in example_rows()]
    return rows, OneGenCollator(model.tokenizer, model.config, DOCS, max_negatives)(rows)


def _reference_loss(model, rows, batch):
    """LM loss from ``lm(input_ids, labels=...)`` row by row (no padding at all), contrastive loss from
    ``output_hidden_states`` of unpadded single-row forwards, with loop-based losses."""
    lm = model.lm
    tok_sum, tok_n, qs = 0.0, 0, []
    for r in rows:
        ids = torch.tensor([r.input_ids])
        out = lm(input_ids=ids, labels=torch.tensor([r.labels]), output_hidden_states=True)
        n = sum(1 for lab in r.labels[1:] if lab != -100)
        tok_sum += float(out.loss) * n
        tok_n += n
        for p in r.ret_pos:
            qs.append(out.hidden_states[-1][0, p])
    docs = []
    for k in range(batch["doc_input_ids"].shape[0]):
        n = int(batch["doc_attention_mask"][k].sum())
        out = lm(input_ids=batch["doc_input_ids"][k : k + 1, :n], output_hidden_states=True)
        docs.append(out.hidden_states[-1][0, n - 1])
    return tok_sum / tok_n, torch.stack(qs), torch.stack(docs)


@pytest.mark.parametrize("kind", ["bpr", "infonce"])
def test_loss_equals_plain_reference(onegen_model, kind):
    model = onegen_model
    model.config.loss = kind
    model.config.lambda_lm, model.config.lambda_r = 0.7, 1.3
    rows, batch = _batch(model)
    with torch.no_grad():
        out = model(batch)
        lm_ref, q, d = _reference_loss(model, rows, batch)
    args = (q, d, batch["pos_mask"], batch["neg_mask"], batch["cand_mask"])
    ret_ref = ref_bpr(*args) if kind == "bpr" else ref_infonce(*args, model.config.temperature)
    span = batch["input_ids"].shape[1]
    n_tok = int((batch["labels"] != -100).sum())
    # LM loss: the model path to log-probs, then a mean over the answer tokens
    lm_terms = model_terms(model.lm, span) + n_tok
    assert_f32_close(out.lm_loss, lm_ref, lm_terms)
    # retrieval loss: hidden states (the model path), a cosine over the width, a logsumexp / mean over the
    # candidates and pairs; its terms are cosines scaled by 1 / temperature (InfoNCE) or of size 1 (BPR)
    scale = max(abs(ret_ref), 1 / model.config.temperature if kind == "infonce" else 1.0)
    ret_terms = model_terms(model.lm, span, log_softmax=False) + q.shape[1] + 2 * d.shape[0]
    assert_f32_close(out.retrieval_loss, ret_ref, ret_terms, magnitude=scale)
    assert_f32_close(out.loss, 0.7 * lm_ref + 1.3 * ret_ref, max(lm_terms, ret_terms),
                     magnitude=0.7 * abs(lm_ref) + 1.3 * scale)
    assert out.n_retrievals == 4


def test_training_hidden_state_equals_plain_forward(onegen_model):
    model = onegen_model
    rows, batch = _batch(model)
    with torch.no_grad():
        h = model.hidden_states(batch["input_ids"], batch["attention_mask"])
        picked = model.pick_vectors(h, batch["ret_rows"], batch["ret_pos"], batch["attention_mask"])
        j = 0
        for r in rows:
            plain = model.lm(input_ids=torch.tensor([r.input_ids]), output_hidden_states=True).hidden_states[-1][0]
            terms = model_terms(model.lm, batch["input_ids"].shape[1], log_softmax=False)
            for p in r.ret_pos:   # padded batch against one unpadded row: other kernel shapes
                assert_f32_close(h[int(batch["ret_rows"][j]), p], plain[p], terms)
                assert_f32_close(picked[j], F.normalize(plain[p], dim=-1), terms + plain.shape[-1])
                j += 1


def test_gradients_flow_to_new_rows_and_backbone(onegen_model):
    model = onegen_model
    model.train()
    _, batch = _batch(model)
    model(batch).loss.backward()
    emb = model.lm.get_input_embeddings().weight.grad
    assert emb[model.token_id("query")].abs().sum() > 0 and emb[model.token_id("document")].abs().sum() > 0
    assert model.lm.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_sequence_normalisation_flag_differs(onegen_model):
    model = onegen_model
    _, batch = _batch(model)
    with torch.no_grad():
        a = float(model(batch).retrieval_loss)
        model.config.normalize = "sequence"
        b = float(model(batch).retrieval_loss)
    assert a != pytest.approx(b, rel=1e-3)


def test_new_rows_are_mean_of_description(tiny_dir):
    from unirag.models.generator import load_causal_lm
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.tokens import add_special_tokens

    lm, tok = load_causal_lm(str(tiny_dir))
    before = lm.get_input_embeddings().weight.detach().clone()
    cfg = OneGenConfig(base_model=str(tiny_dir))
    ids = add_special_tokens(lm, tok, cfg)
    w = lm.get_input_embeddings().weight
    assert w.shape[0] == before.shape[0] + 4
    for spec in cfg.tokens:
        desc = tok(spec.description, add_special_tokens=False)["input_ids"]
        assert torch.equal(w[ids[spec.role]], before[desc].mean(0))   # the same mean over the same rows: exact
    assert lm.get_output_embeddings().weight.data_ptr() == w.data_ptr()  # still tied
    assert add_special_tokens(lm, tok, cfg) == ids and len(tok) == w.shape[0]  # idempotent


def test_untied_output_rows_initialised(tmp_path):
    from tests.onegen.helpers import make_llama, make_tokenizer
    from unirag.onegen.config import OneGenConfig
    from unirag.onegen.tokens import add_special_tokens

    tok = make_tokenizer()
    lm = make_llama(len(tok), tie=False)
    out_before = lm.get_output_embeddings().weight.detach().clone()
    ids = add_special_tokens(lm, tok, OneGenConfig())
    desc = tok(OneGenConfig().tokens[0].description, add_special_tokens=False)["input_ids"]
    # the same mean over the same rows: exact
    assert torch.equal(lm.get_output_embeddings().weight[ids["query"]], out_before[desc].mean(0))


def test_embed_documents_and_query_vectors(onegen_model):
    model = onegen_model
    texts = list(DOCS.values())
    vec = model.embed_documents(texts, batch_size=2)
    assert vec.shape == (5, 32) and vec.dtype == np.float32
    assert_f32_close(np.linalg.norm(vec, axis=1), np.ones(5), vec.shape[1])    # a sum of squares over the width
    with torch.no_grad():  # one by one, unpadded: same vectors
        for i, t in enumerate(texts):
            ids = model.tokenizer(t, truncation=True, max_length=model.config.max_doc_tokens)["input_ids"]
            ids = torch.tensor([ids + [model.token_id("document")]])
            h = model.lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
            # batched and padded against one unpadded row; unit vectors, so magnitude 1
            assert_f32_close(vec[i], F.normalize(h, dim=-1), model_terms(model.lm, ids.shape[1], log_softmax=False) + 32)
    ctx = model.chat_prompt("Which river flows through Cairo?", "[RQ]")
    q = model.query_vectors([ctx])
    assert q.shape == (1, 32)
    with pytest.raises(ValueError, match="does not end with"):
        model.query_vectors([model.chat_prompt("x")])
