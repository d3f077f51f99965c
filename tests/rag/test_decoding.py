"""Decoding: beam search with one document equals the generator's own, thorough scores equal a
brute-force scoring of every hypothesis, fast scores follow the paper's approximation, and the
outputs match the transformers RAG implementation."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bart, tiny_llama

from tests.tolerance import assert_f32_close as _close
from tests.tolerance import model_terms
from unirag.rag import decoding as D
from unirag.rag import marginals as M
from unirag.rag.inputs import Contexts

EOS, PAD, BOS = 2, 0, 1


def _contexts(kind: str, b: int, k: int, seed: int = 0, length: int = 9) -> Contexts:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 100, (b * k, length), generator=g)
    mask = torch.ones_like(ids)
    if kind == "causal":                 # ragged prompts, left-padded
        for r in range(0, b * k, 2):
            ids[r, :3], mask[r, :3] = PAD, 0
    return Contexts(ids, mask, k, kind == "seq2seq")


def _model(kind):
    return tiny_bart() if kind == "seq2seq" else tiny_llama()


def _own_generate(gen, ctx, **kw):
    out = gen.generate(input_ids=ctx.input_ids, attention_mask=ctx.attention_mask, eos_token_id=EOS,
                       pad_token_id=PAD, **kw)
    out = out[:, 1:] if ctx.is_seq2seq else out[:, ctx.input_ids.shape[1]:]
    return [D._trim(r, EOS, PAD) for r in out.tolist()]


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_one_document_beam_and_greedy_equal_generator(kind):
    gen = _model(kind)
    ctx = _contexts(kind, 4, 1)
    ds = torch.zeros(4, 1)
    for nb in (1, 3):
        want = _own_generate(gen, ctx, num_beams=nb, max_new_tokens=8, do_sample=False)
        if nb == 1:
            got = D.token_sample(gen, ctx, ds, 8, EOS, PAD).tokens
        else:
            got = D.token_beam_search(gen, ctx, ds, nb, 8, EOS, PAD).tokens
        assert got == want


def _brute_ll(gen, ctx, row: int, hyp: list[int]) -> float:
    """log p(hyp | context row), one plain forward pass without cache."""
    ids = ctx.input_ids[row : row + 1]
    mask = ctx.attention_mask[row : row + 1]
    y = torch.tensor([hyp])
    with torch.no_grad():
        if ctx.is_seq2seq:
            dec = torch.cat([torch.tensor([[gen.config.decoder_start_token_id]]), y[:, :-1]], 1)
            logits = gen(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits[0]
        else:
            keep = mask[0].bool()
            full = torch.cat([ids[:, keep], y], 1)
            logits = gen(input_ids=full).logits[0, keep.sum() - 1 : -1]
    return float(logits.log_softmax(-1).gather(1, y[0][:, None]).sum())


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_thorough_scores_equal_brute_force(kind):
    gen = _model(kind)
    b, k, nb = 2, 3, 2
    ctx = _contexts(kind, b, k, seed=1)
    ds = torch.randn(b, k, generator=torch.Generator().manual_seed(2))
    out = D.sequence_thorough(gen, ctx, ds, nb, 6, EOS, PAD, bos_token_id=None, num_return_sequences=k * nb)
    n = len(out.tokens) // b
    doc_lp = ds.log_softmax(-1)
    for i in range(b):
        brute = []
        for hyp in out.tokens[i * n : (i + 1) * n]:
            if not hyp:                       # padding slot of a question with fewer unique hypotheses
                brute.append(float("-inf"))
                continue
            lls = torch.tensor([_brute_ll(gen, ctx, i * k + z, hyp) for z in range(k)])
            brute.append(float((doc_lp[i] + lls).logsumexp(0)))
        got = out.scores[i * n : (i + 1) * n]
        finite = torch.isfinite(got)
        # per hypothesis: a model pass per position, a sum over <= 6 positions, a logsumexp over k documents
        _close(got[finite], torch.tensor(brute)[finite], model_terms(gen, ctx.input_ids.shape[1] + 6) + 6 + k)
        assert got[0] == got[finite].max()


@pytest.mark.parametrize("kind,nb", [("seq2seq", 2), ("causal", 2), ("causal", 1)])
def test_fast_scores_use_only_producing_documents(kind, nb):
    gen = _model(kind)
    b, k = 2, 3
    ctx = _contexts(kind, b, k, seed=3)
    ds = torch.randn(b, k, generator=torch.Generator().manual_seed(4))
    out = D.sequence_fast(gen, ctx, ds, nb, 6, EOS, PAD, num_return_sequences=k * nb)
    beams = _own_generate(gen, ctx, num_beams=nb, num_return_sequences=nb, max_new_tokens=6, do_sample=False)
    n = len(out.tokens) // b
    for i in range(b):
        for hyp, score in zip(out.tokens[i * n : (i + 1) * n], out.scores[i * n : (i + 1) * n]):
            if not torch.isfinite(score):
                continue
            docs = [z for z in range(k) if hyp in beams[(i * k + z) * nb : (i * k + z + 1) * nb]]
            want = torch.tensor([float(ds[i].log_softmax(-1)[z]) + _brute_ll(gen, ctx, i * k + z, hyp)
                                 for z in docs]).logsumexp(0)
            _close(score, want, model_terms(gen, ctx.input_ids.shape[1] + 6) + 6 + k)


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_token_beam_scores_are_length_normalised_marginals(kind):
    gen = _model(kind)
    b, k = 2, 3
    ctx = _contexts(kind, b, k, seed=5)
    ds = torch.randn(b, k, generator=torch.Generator().manual_seed(6))
    out = D.token_beam_search(gen, ctx, ds, 3, 7, EOS, PAD)
    target, mask, _ = D.pad_hypotheses([[t] for t in out.tokens], PAD, EOS, "cpu")
    with torch.no_grad():
        from unirag.rag.scoring import context_logits

        logits = context_logits(gen, ctx, target[:, 0])[:, 0]
    nll = M.rag_token_nll_reference(logits, ds, target[:, 0], mask[:, 0])
    lens = mask[:, 0].sum(-1).float()
    # log-probs of <= 7 positions, a logsumexp over k documents per position, their sum
    _close(out.scores, -nll / lens, model_terms(gen, ctx.input_ids.shape[1] + 7) + k + 7)


def test_greedy_picks_argmax_of_marginal_each_step():
    gen = _model("seq2seq")
    ctx = _contexts("seq2seq", 2, 3, seed=7)
    ds = torch.randn(2, 3)
    out = D.token_sample(gen, ctx, ds, 5, EOS, PAD)
    from unirag.rag.scoring import context_logits

    for i, toks in enumerate(out.tokens):
        with torch.no_grad():
            logits = context_logits(gen, Contexts(ctx.input_ids[i * 3:(i + 1) * 3], ctx.attention_mask[i * 3:(i + 1) * 3],
                                                  3, True), torch.tensor([toks]))[0, 0]
        marg = (logits.log_softmax(-1) + ds[i].log_softmax(-1)[:, None, None]).logsumexp(0)
        assert marg.argmax(-1).tolist() == toks


def test_sampling_is_seeded_and_respects_top_k():
    gen = _model("causal")
    ctx = _contexts("causal", 2, 2, seed=8)
    ds = torch.randn(2, 2)
    a = D.token_sample(gen, ctx, ds, 6, EOS, PAD, True, 1.0, generator=torch.Generator().manual_seed(0)).tokens
    b = D.token_sample(gen, ctx, ds, 6, EOS, PAD, True, 1.0, generator=torch.Generator().manual_seed(0)).tokens
    c = D.token_sample(gen, ctx, ds, 6, EOS, PAD, True, 1.0, top_k=1).tokens
    assert a == b
    assert c == D.token_sample(gen, ctx, ds, 6, EOS, PAD).tokens


def _hf_rag(cls, gen):
    from transformers import BertConfig
    from transformers import RagConfig as HFRagConfig

    q = BertConfig(vocab_size=gen.config.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=16)
    from transformers import BertModel

    cfg = HFRagConfig.from_question_encoder_generator_configs(q, gen.config, n_docs=3)
    return cls(config=cfg, question_encoder=BertModel(q), generator=gen).eval()


def test_matches_transformers_rag_token_and_sequence_generate():
    from transformers import RagSequenceForGeneration, RagTokenForGeneration

    gen = tiny_bart(1)
    b, k = 3, 3
    ctx = _contexts("seq2seq", b, k, seed=9)
    ds = torch.randn(b, k, generator=torch.Generator().manual_seed(10))
    common = dict(context_input_ids=ctx.input_ids, context_attention_mask=ctx.attention_mask, doc_scores=ds,
                  n_docs=k, eos_token_id=EOS, pad_token_id=PAD, forced_eos_token_id=None, forced_bos_token_id=None)
    hf_tok = _hf_rag(RagTokenForGeneration, gen)
    for nb in (1, 3):
        want = hf_tok.generate(num_beams=nb, max_length=9, **common)
        want = [D._trim(r, EOS, PAD) for r in want[:, 1:].tolist()]
        got = (D.token_sample(gen, ctx, ds, 8, EOS, PAD) if nb == 1
               else D.token_beam_search(gen, ctx, ds, nb, 8, EOS, PAD)).tokens
        assert got == want
    hf_seq = _hf_rag(RagSequenceForGeneration, gen)
    want = hf_seq.generate(num_beams=2, max_new_tokens=8, **common)
    want = [D._trim(r, EOS, PAD) for r in want[:, 1:].tolist()]
    assert D.sequence_thorough(gen, ctx, ds, 2, 8, EOS, PAD, bos_token_id=BOS).tokens == want


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_training_token_logprobs_equal_full_logits(kind):
    """The lean training pass (LM head on answer tokens only, trailing pad columns not run) gives the
    same token log-probs, losses and gradients as the full ``[B, K, T, V]`` logits."""
    from unirag.rag.scoring import context_logits, context_token_logprobs

    gen = _model(kind)
    b, k = 3, 2
    ctx = _contexts(kind, b, k, seed=11)
    if kind == "seq2seq":                        # ragged contexts, right-padded
        ctx.attention_mask[1, -4:], ctx.input_ids[1, -4:] = 0, PAD
    target = torch.randint(6, 100, (b, 6), generator=torch.Generator().manual_seed(12))
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0, 3:], mask[1, 5:], mask[2, 4:] = False, False, False     # column 5 masked everywhere: trimmed
    ds = torch.randn(b, k, generator=torch.Generator().manual_seed(13))
    full = M.token_logprobs(context_logits(gen, ctx, target)[:, 0], target, ds) * mask[:, None, :]
    lean = context_token_logprobs(gen, ctx, target, mask)
    terms = model_terms(gen, ctx.input_ids.shape[1] + target.shape[1])
    _close(lean, full, terms)
    for loss_fn in (lambda t: M.rag_token_nll_from_logprobs(t, ds, mask, reduction="sum"),
                    lambda t: M.rag_sequence_nll_from_logprobs(t, ds, mask, reduction="sum")):
        grads = []
        for tok in (lambda: M.token_logprobs(context_logits(gen, ctx, target)[:, 0], target, ds),
                    lambda: context_token_logprobs(gen, ctx, target, mask)):
            gen.zero_grad()
            loss_fn(tok()).backward()
            grads.append(torch.cat([p.grad.flatten() for p in gen.parameters() if p.grad is not None]))
        # a weight's gradient also sums over every (question, document, position); some gradients are 0 in
        # exact arithmetic (key biases: softmax ignores a constant shift) and carry only that rounding
        _close(grads[1], grads[0], terms + target.numel() * k)


@pytest.mark.parametrize("padded", [False, True])
def test_shared_seq2seq_scoring_equals_per_row_pass(padded):
    """Several hypotheses per context: the encoder / cross-attention / first step shared per
    context give the logits of a plain per-row pass, with and without the head-only selection."""
    from unirag.rag.scoring import _run, context_logits, context_rows, per_context, selected_logits

    gen = _model("seq2seq")
    b, h, k, t = 2, 3, 2, 5
    ctx = _contexts("seq2seq", b, k, seed=5)
    if padded:
        ctx.attention_mask[1, 6:] = 0
        ctx.input_ids[1, 6:] = PAD
    target = torch.randint(6, 100, (b, h, t), generator=torch.Generator().manual_seed(6))
    mask = torch.rand(b, h, t, generator=torch.Generator().manual_seed(7)) > 0.3
    with torch.no_grad():
        rows = context_rows(b, h, k, "cpu")
        want = _run(gen, ctx, per_context(target, k), rows, h, t)    # per row, no sharing
        got = context_logits(gen, ctx, target).reshape(-1, t, want.shape[-1])
        sel = per_context(mask, k)
        got_sel = selected_logits(gen, ctx, target, sel)
    terms = model_terms(gen, ctx.input_ids.shape[1] + t, log_softmax=False)
    _close(got, want, terms)
    _close(got_sel, want[sel], terms)


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_rows_without_selected_positions_are_skipped_exactly(kind):
    from unirag.rag.scoring import context_logits, per_context, selected_logits

    gen = _model(kind)
    b, h, k, t = 2, 3, 2, 4
    ctx = _contexts(kind, b, k, seed=8)
    target = torch.randint(6, 100, (b, h, t), generator=torch.Generator().manual_seed(9))
    mask = torch.ones(b, h, t, dtype=torch.bool)
    mask[0, 1] = False                       # a padding hypothesis: nothing to score
    mask[1, 2, 2:] = False
    with torch.no_grad():
        full = context_logits(gen, ctx, target).reshape(b * h * k, t, -1)
        sel = per_context(mask, k)
        got = selected_logits(gen, ctx, target, sel)
    _close(got, full[sel], model_terms(gen, ctx.input_ids.shape[1] + t, log_softmax=False))


@pytest.mark.parametrize("kind", ["seq2seq", "causal"])
def test_prefix_shared_scoring_equals_plain(kind):
    gen = _model(kind)
    b, h, k, t = 2, 4, 3, 5
    ctx = _contexts(kind, b, k, seed=10)
    target = torch.randint(6, 12, (b, h, t), generator=torch.Generator().manual_seed(11))
    target[:, 1, :3] = target[:, 0, :3]          # shared prefixes within each question
    target[1, 2] = target[1, 0]                  # and a duplicate
    mask = torch.ones(b, h, t, dtype=torch.bool)
    mask[0, 3, 3:] = False
    with torch.no_grad():
        plain = D.hypothesis_logprobs(gen, ctx, target, mask, share_prefixes=False)
        shared = D.hypothesis_logprobs(gen, ctx, target, mask)
    _close(shared, plain, model_terms(gen, ctx.input_ids.shape[1] + t) + t)     # + the sum over positions
    ids = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 7], [5, 6, 7]])
    rep, where = D.prefix_representatives(torch.tensor([0, 0, 0, 1]), ids, torch.ones(4, 3, dtype=torch.bool))
    # position 0: one state per context (rows 0-2 share, row 3 alone); position 1: prefix (5,) shared
    # by rows 0-2; position 2: prefixes (5,6) of rows 0-1 shared, (5,9) and row 3's own
    assert rep.tolist() == [[True, True, True], [False, False, False], [False, False, True], [True, True, True]]
    assert where.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 3, 4, 5, 6]
