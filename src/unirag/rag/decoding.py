"""Decoding for RAG: RAG-Token beam / greedy / sampling over the marginal next-token distribution,
RAG-Sequence "thorough" and "fast" decoding (Lewis et al. 2020, section 2.5).

Rows are laid out ``(b, beam, k)``: every beam of question b keeps one generator state per
document k, and the KV cache is reordered per beam and document together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unirag.rag.inputs import Contexts
from unirag.rag.scoring import context_rows, decoder_start_id, per_context, positions, selected_logits


@dataclass
class Decoded:
    """Best hypotheses: ``tokens[b * n + r]`` (EOS included, no start/pad token) and their log-scores."""

    tokens: list[list[int]]
    scores: torch.Tensor


class Stepper:
    """Incremental generator over context rows with a KV cache that can be reordered (beam × doc)."""

    def __init__(self, gen, ctx: Contexts):
        self.gen, self.ctx, self.cache = gen, ctx, None

    def first(self) -> torch.Tensor:
        """Logits ``[B*K, V]`` (float) of the first answer token under every context."""
        g, c = self.gen, self.ctx
        if c.is_seq2seq:
            self.hidden = g.get_encoder()(input_ids=c.input_ids, attention_mask=c.attention_mask,
                                          return_dict=True).last_hidden_state
            # no padding in any context: no cross-attention mask to build, expand and reorder per step
            self.mask = None if bool(c.attention_mask.all()) else c.attention_mask
            start = torch.full((c.input_ids.shape[0], 1), decoder_start_id(g), dtype=torch.long,
                               device=c.input_ids.device)
            out = g(encoder_outputs=(self.hidden,), attention_mask=self.mask, decoder_input_ids=start,
                    use_cache=True, return_dict=True)
        else:
            self.mask = c.attention_mask
            pos = positions(self.mask)
            self.next_pos = pos[:, -1] + 1
            out = g(input_ids=c.input_ids, attention_mask=self.mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1, return_dict=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def reorder(self, idx: torch.Tensor, same_context: bool = False) -> None:
        """Select / repeat rows (expansion to several beams). ``same_context``: every row keeps its
        question and document (a beam reordering), so only the decoder self-attention states move;
        encoder states, cross-attention cache and masks are equal across a context's beams."""
        if same_context:
            self_cache = getattr(self.cache, "self_attention_cache", self.cache)
            self_cache.reorder_cache(idx)
            return
        self.cache.reorder_cache(idx)
        if self.mask is not None:
            self.mask = self.mask[idx]
        if self.ctx.is_seq2seq:
            self.hidden = self.hidden[idx]
        else:
            self.next_pos = self.next_pos[idx]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; logits ``[rows, V]`` (float) of the next one."""
        g = self.gen
        if self.ctx.is_seq2seq:
            out = g(encoder_outputs=(self.hidden,), attention_mask=self.mask, decoder_input_ids=tokens[:, None],
                    past_key_values=self.cache, use_cache=True, return_dict=True)
        else:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], 1)
            out = g(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.next_pos[:, None],
                    past_key_values=self.cache, use_cache=True, return_dict=True)
            self.next_pos = self.next_pos + 1
        self.cache = out.past_key_values
        return out.logits[:, -1].float()


def _marginal(logits: torch.Tensor, doc_lp: torch.Tensor, renormalise: bool = True) -> torch.Tensor:
    """log Σ_z p(z|x) p(v|x,z,y<i) from logits ``[B, n, K, V]``, ``doc_lp [B, K]`` -> ``[B, n, V]``
    (``renormalise``: one more log-softmax, as the reference beam search applies to it).

    log p(v|x,z) = logits - lse_z, so the per-document log-softmax folds into one bias per row
    (doc_lp - lse_z): no ``[B, n, K, V]`` log-softmax copy; with one document it is just that bias.
    """
    bias = doc_lp[:, None, :, None] - logits.logsumexp(-1, keepdim=True)      # [B, n, K, 1]
    marg = (logits + bias)[:, :, 0] if logits.shape[2] == 1 else (logits + bias).logsumexp(2)
    return marg.log_softmax(-1) if renormalise else marg


def _trim(row: list[int], eos: int | None, pad: int | None) -> list[int]:
    if eos is not None and eos in row:
        return row[: row.index(eos) + 1]
    while row and pad is not None and row[-1] == pad:
        row = row[:-1]
    return row


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        srt, idx = logits.sort(-1, descending=True)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum - srt.softmax(-1) > top_p
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return logits


@torch.no_grad()
def token_sample(gen, ctx: Contexts, doc_scores: torch.Tensor, max_new_tokens: int, eos_token_id: int,
                 pad_token_id: int, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None) -> Decoded:
    """RAG-Token greedy decoding (``do_sample=False``) or ancestral sampling from the marginal."""
    b, k = doc_scores.shape
    doc_lp = doc_scores.float().log_softmax(-1)
    st = Stepper(gen, ctx)
    logits = st.first()
    done = torch.zeros(b, dtype=torch.bool, device=logits.device)
    out, score = [], torch.zeros(b, device=logits.device)
    for _ in range(max_new_tokens):
        marg = _marginal(logits.view(b, 1, k, -1), doc_lp, renormalise=False)[:, 0]
        if do_sample:
            probs = _filter(marg / max(temperature, 1e-6), top_k, top_p).softmax(-1)
            tok = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            tok = marg.argmax(-1)
        score = score + torch.where(done, 0.0, marg.gather(1, tok[:, None])[:, 0])
        tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
        out.append(tok)
        done = done | tok.eq(eos_token_id)
        if bool(done.all()):
            break
        logits = st.step(tok.repeat_interleave(k))
    seqs = torch.stack(out, 1).tolist()
    return Decoded([_trim(s, eos_token_id, pad_token_id) for s in seqs], score)


@torch.no_grad()
def token_beam_search(gen, ctx: Contexts, doc_scores: torch.Tensor, num_beams: int, max_new_tokens: int,
                      eos_token_id: int, pad_token_id: int, length_penalty: float = 1.0,
                      early_stopping: bool | str = False, num_return_sequences: int = 1) -> Decoded:
    """RAG-Token beam search: the beam search of ``transformers`` (same pruning, length penalty and
    stopping rule) over log Σ_z p(z|x) p(y_i|x,z,y<i), with the cache reordered per beam × document."""
    b, k = doc_scores.shape
    nb, t = num_beams, max_new_tokens
    doc_lp = doc_scores.float().log_softmax(-1)
    st = Stepper(gen, ctx)
    logits = st.first()
    dev = logits.device
    expand = context_rows(b, nb, k, dev)
    st.reorder(expand)
    logits = logits[expand]
    keep = 2 * nb
    top_mask = torch.arange(keep, device=dev) < nb
    running = torch.full((b, nb, t), pad_token_id, dtype=torch.long, device=dev)
    seqs = running.clone()
    run_scores = torch.zeros(b, nb, device=dev)
    run_scores[:, 1:] = -1e9
    fin_scores = torch.full((b, nb), -1e9, device=dev)
    finished = torch.zeros(b, nb, dtype=torch.bool, device=dev)
    open_ = torch.ones(b, 1, dtype=torch.bool, device=dev)
    lengths = torch.zeros(b, nb, dtype=torch.long, device=dev)
    for s in range(t):
        acc = (_marginal(logits.view(b, nb, k, -1), doc_lp) + run_scores[..., None]).view(b, -1)
        top_v, top_i = acc.topk(keep, -1)
        vocab = acc.shape[-1] // nb
        beam, tok = top_i // vocab, top_i % vocab
        cand = running.gather(1, beam[..., None].expand(-1, -1, t)).clone()
        cand[:, :, s] = tok
        hits = tok.eq(eos_token_id) | (s + 1 >= t)
        r_scores = top_v + hits.float() * -1e9
        nxt = r_scores.topk(nb, -1).indices
        running = cand.gather(1, nxt[..., None].expand(-1, -1, t))
        run_scores, run_beam = r_scores.gather(1, nxt), beam.gather(1, nxt)
        f = top_v / ((s + 1) ** length_penalty)
        if early_stopping is True:
            f = f + finished.all(-1, keepdim=True).float() * -1e9
        just = hits & top_mask[None]
        f = f + (~open_).float() * -1e9 + (~just).float() * -1e9
        m_scores = torch.cat([fin_scores, f], 1)
        sel = m_scores.topk(nb, -1).indices
        seqs = torch.cat([seqs, cand], 1).gather(1, sel[..., None].expand(-1, -1, t))
        fin_scores = m_scores.gather(1, sel)
        finished = torch.cat([finished, just], 1).gather(1, sel)
        lengths = torch.cat([lengths, torch.full_like(just, s + 1, dtype=torch.long)], 1).gather(1, sel)
        best_len = t if (early_stopping == "never" and length_penalty > 0) else s + 1
        worst = torch.where(finished, fin_scores.min(1, keepdim=True).values, torch.full_like(fin_scores, -1e9))
        open_ = open_ & (run_scores[:, :1] / best_len**length_penalty > worst).any(-1, keepdim=True)
        if not bool(open_.any()) or bool(hits.all()) or (early_stopping is True and bool(finished.all())):
            break
        rows = ((torch.arange(b, device=dev)[:, None] * nb + run_beam)[:, :, None] * k
                + torch.arange(k, device=dev)[None, None, :]).reshape(-1)
        st.reorder(rows, same_context=True)
        logits = st.step(running[:, :, s].repeat_interleave(k, dim=1).reshape(-1))
    n = num_return_sequences
    out = [_trim(seqs[i, j, : int(lengths[i, j])].tolist(), eos_token_id, pad_token_id)
           for i in range(b) for j in range(n)]
    return Decoded(out, fin_scores[:, :n].reshape(-1))


def _doc_beams(gen, ctx: Contexts, num_beams: int, max_new_tokens: int, eos_token_id: int, pad_token_id: int,
               length_penalty: float = 1.0) -> tuple[list[list[int]], torch.Tensor]:
    """Beam search of the plain generator on every context row (each row its own one-document
    problem, equal to the generator's ``generate``): ``B*K*num_beams`` hypotheses, best first per
    row, with scores log p(y|x,z) (length-normalised for beams > 1, as ``generate`` reports them)."""
    solo = Contexts(ctx.input_ids, ctx.attention_mask, 1, ctx.is_seq2seq)
    zeros = torch.zeros(ctx.input_ids.shape[0], 1, device=ctx.input_ids.device)
    if num_beams == 1:
        out = token_sample(gen, solo, zeros, max_new_tokens, eos_token_id, pad_token_id)
    else:
        out = token_beam_search(gen, solo, zeros, num_beams, max_new_tokens, eos_token_id, pad_token_id,
                                length_penalty=length_penalty, num_return_sequences=num_beams)
    return out.tokens, out.scores


def _dedup(toks: list[list[int]], b: int, per_example: int) -> tuple[list[list[list[int]]], list[list[int]]]:
    """Unique hypotheses per example (first occurrence order) and each candidate's unique index."""
    uniq, where = [], []
    for i in range(b):
        seen: dict[tuple[int, ...], int] = {}
        ids = [seen.setdefault(tuple(t), len(seen)) for t in toks[i * per_example:(i + 1) * per_example]]
        uniq.append([list(u) for u in seen])
        where.append(ids)
    return uniq, where


def pad_hypotheses(uniq: list[list[list[int]]], pad: int, eos: int, device) -> tuple[torch.Tensor, ...]:
    """``target [B, H, T]``, ``mask [B, H, T]``, ``valid [B, H]`` from ragged hypotheses (each already
    cut after its EOS; every kept token is scored, a pad id inside a hypothesis included)."""
    h = max(len(u) for u in uniq)
    t = max(1, max(len(s) for u in uniq for s in u))
    target = torch.full((len(uniq), h, t), pad, dtype=torch.long)
    mask = torch.zeros((len(uniq), h, t), dtype=torch.bool)
    valid = torch.zeros((len(uniq), h), dtype=torch.bool)
    for i, u in enumerate(uniq):
        for j, s in enumerate(u):
            target[i, j, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, j, : len(s)] = True
            valid[i, j] = True
    return target.to(device), mask.to(device), valid.to(device)


def prefix_representatives(context: torch.Tensor, ids: torch.Tensor, sel: torch.Tensor,
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions with the same context row and the same preceding tokens have the same next-token
    distribution. For rows ``[N, T]`` of token ``ids`` under ``context [N]`` and the positions
    ``sel [N, T]`` to score: ``(rep, where)``, ``rep [N, T]`` marking the first selected position of
    each distinct (context, prefix) and ``where [n_selected]`` the index, among the ``rep``
    positions in row-major order, of each selected position's representative."""
    n, t = ids.shape
    key = context.long()
    keys = [key]
    for p in range(1, t):  # key of position p: (key of position p - 1, token p - 1), renumbered
        key = torch.unique(torch.stack([key, ids[:, p - 1]], 1), dim=0, return_inverse=True)[1]
        keys.append(key)
    depth = torch.stack(keys, 1)                                   # [N, T] ids within each depth
    width = int(depth.max()) + 1
    uid = (torch.arange(t, device=ids.device)[None, :] * width + depth)[sel]   # row-major, selected
    uniq, inv = torch.unique(uid, return_inverse=True)
    first = torch.full((len(uniq),), len(uid), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inv, torch.arange(len(uid), device=ids.device), "amin")
    flat = sel.reshape(-1).nonzero()[:, 0]                          # selected -> flat position
    rep = torch.zeros(n * t, dtype=torch.bool, device=ids.device)
    rep[flat[first]] = True
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(len(first), device=ids.device)
    return rep.view(n, t), rank[inv]


def hypothesis_logprobs(gen, ctx: Contexts, target: torch.Tensor, mask: torch.Tensor,
                        max_elems: int = 1 << 27, share_prefixes: bool = True) -> torch.Tensor:
    """log p(y_i|x,z,y<i) ``[B, H, K, T]`` of every hypothesis under every document (0 where
    ``mask [B, H, T]`` is False), batched over questions (chunks bounded by ``max_elems`` logits).
    Only the unmasked positions reach the LM head and the log-softmax, as in the training pass,
    and with ``share_prefixes`` once per distinct (document, prefix): hypotheses that share their
    first tokens share those positions' distributions (:func:`prefix_representatives`)."""
    from unirag.rag.marginals import gather_log_softmax

    b, h, t = target.shape
    k = ctx.n_docs
    per_q = h * k * t * gen.config.get_text_config().vocab_size
    step = max(1, max_elems // max(per_q, 1))
    outs = []
    for s in range(0, b, step):
        sub = Contexts(ctx.input_ids[s * k:(s + step) * k], ctx.attention_mask[s * k:(s + step) * k], k,
                       ctx.is_seq2seq)
        tg = target[s:s + step]
        n = tg.shape[0]
        sel, full = per_context(mask[s:s + step], k), per_context(tg, k)     # rows (b, h, k)
        ids = full[sel]
        if share_prefixes:  # the LM head and its log-softmax run once per distinct (document, prefix)
            rep, where = prefix_representatives(context_rows(n, h, k, tg.device), full, sel)
            logits = selected_logits(gen, sub, tg, rep).float()
            lp = logits[where, ids] - logits.logsumexp(-1)[where]
        else:
            lp = gather_log_softmax(selected_logits(gen, sub, tg, sel).float(), ids[:, None])[:, 0]
        outs.append(lp.new_zeros(n * h * k, t).masked_scatter(sel, lp).view(n, h, k, t))
    return torch.cat(outs, 0)


@torch.no_grad()
def sequence_thorough(gen, ctx: Contexts, doc_scores: torch.Tensor, num_beams: int, max_new_tokens: int,
                      eos_token_id: int, pad_token_id: int, bos_token_id: int | None = None,
                      exclude_bos: bool = True, num_return_sequences: int = 1) -> Decoded:
    """RAG-Sequence thorough decoding: beam search per document, then every hypothesis scored under
    every document in one batched pass; best by log Σ_z p(z|x) p(y|x,z)."""
    b, k = doc_scores.shape
    toks, _ = _doc_beams(gen, ctx, num_beams, max_new_tokens, eos_token_id, pad_token_id)
    uniq, _ = _dedup(toks, b, k * num_beams)
    target, mask, valid = pad_hypotheses(uniq, pad_token_id, eos_token_id, doc_scores.device)
    tok = hypothesis_logprobs(gen, ctx, target, mask)
    if exclude_bos and bos_token_id is not None:
        drop = (target[:, :, 0].eq(bos_token_id) | ~valid).all(-1)           # per question, as the reference
        tok[:, :, :, 0] = torch.where(drop[:, None, None], 0.0, tok[:, :, :, 0])
    joint = doc_scores.float().log_softmax(-1)[:, None, :] + tok.sum(-1)    # [B, H, K]
    score = joint.logsumexp(-1).masked_fill(~valid, float("-inf"))
    return _pick(uniq, score, num_return_sequences)


@torch.no_grad()
def sequence_fast(gen, ctx: Contexts, doc_scores: torch.Tensor, num_beams: int, max_new_tokens: int,
                  eos_token_id: int, pad_token_id: int, length_penalty: float = 1.0,
                  num_return_sequences: int = 1) -> Decoded:
    """RAG-Sequence fast decoding: no extra forward pass; a hypothesis not in document z's beam is
    given p(y|x,z) ≈ 0, so log p(y|x) = log Σ_{z that produced y} p(z|x) p(y|x,z). ``num_beams=1``
    decodes greedily per document (scores from the per-step log-probs)."""
    b, k = doc_scores.shape
    nb = num_beams
    toks, seq_scores = _doc_beams(gen, ctx, nb, max_new_tokens, eos_token_id, pad_token_id, length_penalty)
    if nb > 1:  # beam scores are length-normalised: undo it to get log p(y|x,z)
        lens = torch.tensor([len(t) for t in toks], dtype=torch.float, device=seq_scores.device)
        seq_scores = seq_scores.float() * lens.clamp(min=1) ** length_penalty
    ll = seq_scores.float().view(b, k, nb)
    uniq, where = _dedup(toks, b, k * nb)
    h = max(len(u) for u in uniq)
    idx = torch.tensor(where, device=ll.device).view(b, k, nb)
    joint = torch.full((b, k, h), float("-inf"), device=ll.device)
    joint.scatter_(2, idx, doc_scores.float().log_softmax(-1)[:, :, None] + ll)
    return _pick(uniq, joint.logsumexp(1), num_return_sequences)


def _pick(uniq: list[list[list[int]]], score: torch.Tensor, n: int) -> Decoded:
    top = score.topk(min(n, score.shape[1]), -1)
    toks = [uniq[i][j] if j < len(uniq[i]) else [] for i in range(len(uniq)) for j in top.indices[i].tolist()]
    return Decoded(toks, top.values.reshape(-1))
