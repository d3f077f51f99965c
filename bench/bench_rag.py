"""Classic RAG against the ``transformers`` implementation, from the same tiny random weights.

Correctness first (identical losses to 1e-5, identical greedy / beam / thorough outputs), then
speed measured side by side in one run (medians of interleaved repeats): RAG-Sequence thorough
decoding, RAG-Sequence fast decoding, RAG-Token beam search and greedy, one training step
(question encoder + generator, AdamW). Two input settings:

* same tensors (engine only): both sides get the same retrieved contexts and doc scores
  (``context_input_ids`` / ``context_attention_mask`` / ``doc_scores``), padded to the longest
  context of the batch, as unirag's ``ContextBuilder`` pads them (``padding=True``);
* default input preparation: transformers' contexts padded to ``max_combined_length`` (300), as
  its ``RagRetriever.postprocess_docs`` pads them (``padding="max_length"``); unirag's as above.
  Outputs and losses must not change with the padding (checked).

    python bench/bench_rag.py            # prints a table, writes bench/results/rag.json
    python bench/bench_rag.py --vocab 50265 --repeats 3 --out bench/results/rag_vocab50k.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved  # noqa: E402

EOS, PAD, BOS, START = 2, 1, 0, 2


def build(vocab: int, d_model: int, seed: int = 0):
    """A BERT-like question encoder and a BART-like generator, random weights; HF RAG models around them."""
    from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertModel, RagConfig,
                              RagSequenceForGeneration, RagTokenForGeneration)

    torch.manual_seed(seed)
    gcfg = BartConfig(vocab_size=vocab, d_model=d_model, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                      decoder_attention_heads=4, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model,
                      max_position_embeddings=512, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                      decoder_start_token_id=START, forced_eos_token_id=None, forced_bos_token_id=None, init_std=0.2)
    qcfg = BertConfig(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=4 * d_model)
    gen, qenc = BartForConditionalGeneration(gcfg).eval(), BertModel(qcfg).eval()
    rcfg = RagConfig.from_question_encoder_generator_configs(qcfg, gcfg, forced_eos_token_id=None)
    hf_tok = RagTokenForGeneration(config=rcfg, question_encoder=qenc, generator=gen).eval()
    hf_seq = RagSequenceForGeneration(config=rcfg, question_encoder=qenc, generator=gen).eval()
    return qenc, gen, hf_tok, hf_seq


def data(b: int, k: int, ctx_len: int, ans_len: int, vocab: int, d_model: int, seed: int = 1):
    """Question ids, K contexts per question (no padding), doc vectors, answer labels (HF layout)."""
    g = torch.Generator().manual_seed(seed)
    q_ids = torch.randint(3, vocab, (b, 12), generator=g)
    ctx = torch.randint(3, vocab, (b * k, ctx_len), generator=g)
    doc_vecs = torch.randn(b, k, d_model, generator=g) * 0.2
    labels = torch.randint(3, vocab, (b, ans_len + 2), generator=g)
    labels[:, 0], labels[:, 1] = START, BOS                     # decoder start, then BOS (BART layout)
    for i in range(b):
        n = 4 + (i * 3) % (ans_len - 3)
        labels[i, n] = EOS
        labels[i, n + 1:] = PAD
    return q_ids, ctx, torch.ones_like(ctx), doc_vecs, labels


def pad_to(ids: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad contexts to ``length`` tokens (what ``padding="max_length"`` produces)."""
    extra = length - ids.shape[1]
    return (torch.nn.functional.pad(ids, (0, extra), value=PAD), torch.nn.functional.pad(mask, (0, extra), value=0))


def trim(rows: list[list[int]]) -> list[list[int]]:
    from unirag.rag.decoding import _trim

    return [_trim(r, EOS, PAD) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=1024,
                    help="1024 keeps the LM head near its share of compute in BART-large; 50265 = BART vocab")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--docs", type=int, default=5)
    ap.add_argument("--ctx-len", type=int, default=48)
    ap.add_argument("--ans-len", type=int, default=10)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for both sides; on a shared 2-core machine 2 threads time OpenMP "
                         "stalls (~3.5 ms per parallel op) rather than work, so 1 is the default")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rag.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from unirag.rag import decoding as D
    from unirag.rag import marginals as M
    from unirag.rag.inputs import Contexts
    from unirag.rag.scoring import context_logits, context_token_logprobs

    qenc, gen, hf_tok, hf_seq = build(a.vocab, a.d_model)
    b, k = a.batch, a.docs
    q_ids, c_ids, c_mask, doc_vecs, labels = data(b, k, a.ctx_len, a.ans_len, a.vocab, a.d_model)
    ctx = Contexts(c_ids, c_mask, k, True)
    with torch.no_grad():
        q = qenc(q_ids).last_hidden_state[:, 0]
        ds = torch.einsum("bd,bkd->bk", q, doc_vecs)
    target, mask = M.hf_targets(labels, PAD)
    p_ids, p_mask = pad_to(c_ids, c_mask, hf_tok.config.max_combined_length)   # transformers' default padding
    report: dict = {"config": vars(a), "correctness": {}, "speed": {}}

    # ---------------------------------------------------------------- correctness: losses
    # (a) full forward passes of both implementations in float32: relative difference;
    # (b) both loss functions on the same logits in float64: absolute difference.
    def rel(x, y):
        return float(((x - y).abs() / y.abs().clamp_min(1e-6)).max())

    with torch.no_grad():
        logits = context_logits(gen, ctx, target)[:, 0]
        l64, d64 = logits.double(), ds.double()
        for eps in (0.0, 0.1):
            hf_tok.config.label_smoothing = hf_seq.config.label_smoothing = eps
            ht = hf_tok(context_input_ids=c_ids, context_attention_mask=c_mask, doc_scores=ds, labels=labels,
                        n_docs=k, reduce_loss=False).loss
            c = report["correctness"]
            c[f"token_loss_fp32_forward_reldiff_eps{eps}"] = rel(M.rag_token_nll(logits, ds, target, mask, eps), ht)
            c[f"token_loss_fp64_absdiff_eps{eps}"] = float((hf_tok.get_nll(l64.flatten(0, 1), d64, labels, epsilon=eps,
                                                                        n_docs=k) -
                                                           M.rag_token_nll(l64, d64, target, mask, eps)).abs().max())
            for excl in (False, True):
                hs = hf_seq(context_input_ids=c_ids, context_attention_mask=c_mask, doc_scores=ds, labels=labels,
                            n_docs=k, reduce_loss=False, exclude_bos_score=excl).loss
                ours = M.rag_sequence_nll(logits, ds, target, mask, eps, excl)
                c[f"sequence_loss_fp32_forward_reldiff_eps{eps}_exclbos{excl}"] = rel(ours, hs)
                ref64 = hf_seq.get_nll(l64.flatten(0, 1), d64, labels, epsilon=eps, exclude_bos_score=excl, n_docs=k)
                c[f"sequence_loss_fp64_absdiff_eps{eps}_exclbos{excl}"] = float(
                    (ref64 - M.rag_sequence_nll(l64, d64, target, mask, eps, excl)).abs().max())
        hf_tok.config.label_smoothing = hf_seq.config.label_smoothing = 0.0
        tok_lp = context_token_logprobs(gen, ctx, target, mask)                # the training path
        ht = hf_tok(context_input_ids=c_ids, context_attention_mask=c_mask, doc_scores=ds, labels=labels,
                    n_docs=k, reduce_loss=False).loss
        hp = hf_tok(context_input_ids=p_ids, context_attention_mask=p_mask, doc_scores=ds, labels=labels,
                    n_docs=k, reduce_loss=False).loss
        c["token_loss_train_path_reldiff"] = rel(M.rag_token_nll_from_logprobs(tok_lp, ds, mask), ht)
        c["token_loss_hf_padded_vs_unpadded_reldiff"] = rel(hp, ht)
        hs = hf_seq(context_input_ids=c_ids, context_attention_mask=c_mask, doc_scores=ds, labels=labels,
                    n_docs=k, reduce_loss=False).loss
        c["sequence_loss_train_path_reldiff"] = rel(M.rag_sequence_nll_from_logprobs(tok_lp, ds, mask), hs)

    # ---------------------------------------------------------------- correctness: decoding outputs
    common = dict(context_input_ids=c_ids, context_attention_mask=c_mask, doc_scores=ds, n_docs=k,
                  eos_token_id=EOS, pad_token_id=PAD, forced_eos_token_id=None, forced_bos_token_id=None)
    T, nb = a.max_new, a.beams

    def hf_greedy():
        return hf_tok.generate(num_beams=1, max_length=T + 1, **common)

    def hf_beam():
        return hf_tok.generate(num_beams=nb, max_length=T + 1, **common)

    padded = {**common, "context_input_ids": p_ids, "context_attention_mask": p_mask}

    def hf_greedy_padded():
        return hf_tok.generate(num_beams=1, max_length=T + 1, **padded)

    def hf_beam_padded():
        return hf_tok.generate(num_beams=nb, max_length=T + 1, **padded)

    def hf_thorough():
        return hf_seq.generate(num_beams=nb, max_new_tokens=T, **common)

    def our_greedy():
        return D.token_sample(gen, ctx, ds, T, EOS, PAD)

    def our_beam():
        return D.token_beam_search(gen, ctx, ds, nb, T, EOS, PAD)

    def our_thorough():
        return D.sequence_thorough(gen, ctx, ds, nb, T, EOS, PAD, bos_token_id=BOS)

    def our_fast():
        return D.sequence_fast(gen, ctx, ds, nb, T, EOS, PAD)

    with torch.no_grad():
        same = {
            "token_greedy": trim(hf_greedy()[:, 1:].tolist()) == our_greedy().tokens,
            "token_beam": trim(hf_beam()[:, 1:].tolist()) == our_beam().tokens,
            "sequence_thorough": trim(hf_thorough()[:, 1:].tolist()) == our_thorough().tokens,
            "token_greedy_hf_padded": trim(hf_greedy_padded()[:, 1:].tolist()) == our_greedy().tokens,
            "token_beam_hf_padded": trim(hf_beam_padded()[:, 1:].tolist()) == our_beam().tokens,
        }
        fast = our_fast().tokens
        same["sequence_fast_agrees_with_thorough"] = sum(x == y for x, y in zip(fast, our_thorough().tokens)) / b
    report["correctness"].update(same)

    # ---------------------------------------------------------------- speed: decoding
    with torch.no_grad():
        dec = interleaved({"hf_thorough": hf_thorough, "our_thorough": our_thorough, "our_fast": our_fast,
                            "hf_token_beam": hf_beam, "our_token_beam": our_beam,
                            "hf_token_greedy": hf_greedy, "our_token_greedy": our_greedy,
                            "hf_token_beam_padded": hf_beam_padded, "hf_token_greedy_padded": hf_greedy_padded},
                           a.repeats)

    # ---------------------------------------------------------------- speed: one training step
    opt_hf = torch.optim.AdamW(list(qenc.parameters()) + list(gen.parameters()), lr=1e-5)

    def step(loss_of):
        """One training step: question encoder → doc scores → ``loss_of(scores)`` → AdamW."""
        qenc.train(), gen.train()
        scores = torch.einsum("bd,bkd->bk", qenc(q_ids).last_hidden_state[:, 0], doc_vecs)
        loss_of(scores).backward()
        opt_hf.step()
        opt_hf.zero_grad()

    def hf_loss(model, ids, am):
        return lambda scores: model(context_input_ids=ids, context_attention_mask=am, doc_scores=scores,
                                    labels=labels, n_docs=k, reduce_loss=True).loss

    def our_loss(nll):
        return lambda scores: nll(context_token_logprobs(gen, ctx, target, mask), scores, mask, reduction="sum")

    tr = interleaved({"hf_train_token": lambda: step(hf_loss(hf_tok, c_ids, c_mask)),
                       "our_train_token": lambda: step(our_loss(M.rag_token_nll_from_logprobs)),
                       "hf_train_sequence": lambda: step(hf_loss(hf_seq, c_ids, c_mask)),
                       "our_train_sequence": lambda: step(our_loss(M.rag_sequence_nll_from_logprobs)),
                       "hf_train_token_padded": lambda: step(hf_loss(hf_tok, p_ids, p_mask)),
                       "hf_train_sequence_padded": lambda: step(hf_loss(hf_seq, p_ids, p_mask))}, a.repeats)
    med = {**dec, **tr}
    rows = [
        ("RAG-Sequence thorough decoding", "hf_thorough", "our_thorough", 3.0),
        ("RAG-Sequence fast vs transformers thorough", "hf_thorough", "our_fast", 5.0),
        ("RAG-Sequence fast vs our thorough", "our_thorough", "our_fast", None),
        ("RAG-Token beam search", "hf_token_beam", "our_token_beam", 1.5),
        ("RAG-Token greedy", "hf_token_greedy", "our_token_greedy", None),
        ("training step, RAG-Token loss", "hf_train_token", "our_train_token", 1.3),
        ("training step, RAG-Sequence loss", "hf_train_sequence", "our_train_sequence", None),
        ("default inputs: RAG-Token beam search", "hf_token_beam_padded", "our_token_beam", 1.5),
        ("default inputs: RAG-Token greedy", "hf_token_greedy_padded", "our_token_greedy", None),
        ("default inputs: training step, RAG-Token loss", "hf_train_token_padded", "our_train_token", 1.3),
        ("default inputs: training step, RAG-Sequence", "hf_train_sequence_padded", "our_train_sequence", None),
    ]
    report["median_seconds"] = med
    print(f"\nconfig: {json.dumps(vars(a))}\n")
    print("correctness:")
    for key, val in report["correctness"].items():
        print(f"  {key:<45} {val}")
    print(f"\n{'measurement':<44} {'baseline s':>10} {'unirag s':>10} {'speed-up':>9} {'target':>7}")
    for name, base, ours, target_x in rows:
        x = med[base] / med[ours]
        report["speed"][name] = {"baseline_s": med[base], "unirag_s": med[ours], "speedup": x, "target": target_x}
        tgt = f">={target_x:g}x" if target_x else ""
        print(f"{name:<44} {med[base]:>10.4f} {med[ours]:>10.4f} {x:>8.2f}x {tgt:>7}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
