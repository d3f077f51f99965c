"""Fast RAG marginalisations equal the plain reference, and the transformers implementation."""

from __future__ import annotations

import pytest
import torch

from tests.tolerance import assert_f32_close
from unirag.rag import marginals as M


def _terms(logits, eps=0.0):
    """Accumulated terms of a RAG NLL over ``[B, K, T, V]`` logits: a logsumexp over the vocabulary, a
    sum over positions, a logsumexp over documents, and with label smoothing a sum over the vocabulary."""
    _, k, t, v = logits.shape
    return v + t + k + (v if eps else 0)


def _case(seed=0, b=3, k=4, t=6, v=50):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, t, v, generator=g) * 3
    doc_scores = torch.randn(b, k, generator=g) * 2
    target = torch.randint(0, v, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 4:] = False
    mask[b - 1, 2:] = False
    return logits, doc_scores, target, mask


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("excl", [False, True])
def test_sequence_fast_equals_reference(eps, excl):
    logits, ds, tgt, mask = _case()
    logits.requires_grad_(True)
    ds.requires_grad_(True)
    fast = M.rag_sequence_nll(logits, ds, tgt, mask, eps, excl)
    ref = M.rag_sequence_nll_reference(logits, ds, tgt, mask, eps, excl)
    assert_f32_close(fast, ref, _terms(logits, eps))
    gf = torch.autograd.grad(fast.sum(), (logits, ds))
    gr = torch.autograd.grad(ref.sum(), (logits, ds))
    for a, b in zip(gf, gr):       # the backward pass accumulates over the same terms
        assert_f32_close(a, b, _terms(logits, eps))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_token_fast_equals_reference(eps):
    logits, ds, tgt, mask = _case(1)
    logits.requires_grad_(True)
    ds.requires_grad_(True)
    fast = M.rag_token_nll(logits, ds, tgt, mask, eps)
    ref = M.rag_token_nll_reference(logits, ds, tgt, mask, eps)
    assert_f32_close(fast, ref, _terms(logits, eps))
    gf = torch.autograd.grad(fast.sum(), (logits, ds))
    gr = torch.autograd.grad(ref.sum(), (logits, ds))
    for a, b in zip(gf, gr):       # the backward pass accumulates over the same terms
        assert_f32_close(a, b, _terms(logits, eps))


def test_reference_matches_definition_by_loops():
    """The reference itself against Σ_z p(z|x) Π_i p(y_i|…) and Π_i Σ_z … written as loops in prob space."""
    logits, ds, tgt, mask = _case(2, b=2, k=3, t=4, v=7)
    p = logits.double().softmax(-1)
    pz = ds.double().softmax(-1)
    for i in range(2):
        seq = sum(pz[i, z] * torch.prod(torch.stack([p[i, z, t, tgt[i, t]] for t in range(4) if mask[i, t]]))
                  for z in range(3))
        tok = torch.prod(torch.stack([sum(pz[i, z] * p[i, z, t, tgt[i, t]] for z in range(3))
                                      for t in range(4) if mask[i, t]]))
        # float32 reference against float64 loops: only the reference's rounding counts
        assert_f32_close(M.rag_sequence_nll_reference(logits, ds, tgt, mask)[i], -seq.log(), _terms(logits))
        assert_f32_close(M.rag_token_nll_reference(logits, ds, tgt, mask)[i], -tok.log(), _terms(logits))


def test_one_document_both_variants_equal_lm_nll():
    logits, ds, tgt, mask = _case(3, k=1)
    lm = torch.nn.functional.cross_entropy(logits[:, 0].transpose(1, 2), tgt, reduction="none")
    lm = (lm * mask).sum(-1)
    assert_f32_close(M.rag_sequence_nll(logits, ds, tgt, mask), lm, _terms(logits))
    assert_f32_close(M.rag_token_nll(logits, ds, tgt, mask), lm, _terms(logits))


def test_reductions():
    logits, ds, tgt, mask = _case(4)
    per = M.rag_token_nll(logits, ds, tgt, mask)
    assert per.shape == (3,)
    # the reduction is applied to the same per-row computation: identical kernels, so exactly equal
    assert torch.equal(M.rag_token_nll(logits, ds, tgt, mask, reduction="sum"), per.sum())
    assert torch.equal(M.rag_sequence_nll(logits, ds, tgt, mask, reduction="mean"),
                       M.rag_sequence_nll(logits, ds, tgt, mask).mean())


@pytest.mark.parametrize("variant", ["token", "sequence"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_equals_transformers_get_nll(variant, eps):
    from transformers import BartConfig, BertConfig
    from transformers import RagConfig as HFRagConfig
    from transformers import RagSequenceForGeneration, RagTokenForGeneration

    v, pad, bos = 40, 1, 0
    gcfg = BartConfig(vocab_size=v, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, pad_token_id=pad, bos_token_id=bos)
    qcfg = BertConfig(vocab_size=v, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    cls = RagTokenForGeneration if variant == "token" else RagSequenceForGeneration
    hf = cls(config=HFRagConfig.from_question_encoder_generator_configs(qcfg, gcfg, n_docs=4, label_smoothing=eps))
    g = torch.Generator().manual_seed(5)
    b, k, t = 3, 4, 7
    labels = torch.randint(3, v, (b, t), generator=g)
    labels[:, 1] = bos                                  # targets start with BOS: exclusion applies
    labels[1, 5:] = pad
    logits = torch.randn(b * k, t, v, generator=g)
    ds = torch.randn(b, k, generator=g)
    target, mask = M.hf_targets(labels, pad)
    if variant == "token":
        want = hf.get_nll(logits, ds, labels, epsilon=eps, n_docs=k)
        got = M.rag_token_nll(logits, ds, target, mask, eps)
        assert_f32_close(got, want, _terms(logits.view(b, k, t, v), eps))
    else:
        for excl in (False, True):
            want = hf.get_nll(logits, ds, labels, epsilon=eps, exclude_bos_score=excl, n_docs=k)
            got = M.rag_sequence_nll(logits, ds, target, mask, eps, excl)
            assert_f32_close(got, want, _terms(logits.view(b, k, t, v), eps))
