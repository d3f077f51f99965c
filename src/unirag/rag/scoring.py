"""Teacher-forced generator passes over B × K contexts: the logits behind p(y_i | x, z, y<i)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from unirag.rag.inputs import Contexts


def decoder_start_id(gen) -> int:
    """The seq2seq decoder's start token (BART: ``</s>``, T5: pad)."""
    cfg = gen.config
    start = getattr(cfg, "decoder_start_token_id", None)
    if start is None:
        gc = getattr(gen, "generation_config", None)
        start = getattr(gc, "decoder_start_token_id", None) if gc is not None else None
    if start is None:
        start = cfg.pad_token_id
    return int(start)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded attention mask (0 on padding)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def context_rows(b: int, h: int, k: int, device: torch.device | str) -> torch.Tensor:
    """Context row (b*K + k) of every (b, h, k) in row-major order."""
    bb = torch.arange(b, device=device)[:, None, None]
    kk = torch.arange(k, device=device)[None, None, :]
    return (bb * k + kk).expand(b, h, k).reshape(-1)


def per_context(x: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, H, T]`` per-hypothesis rows → ``[B*H*K, T]``, one copy per document, in the (b, h, k)
    row order of :func:`context_rows`."""
    b, h, t = x.shape
    return x[:, :, None, :].expand(b, h, k, t).reshape(-1, t)


@contextmanager
def _head_on(gen, select: torch.Tensor | None):
    """Run the generator's LM head only on the hidden states at ``select`` (a boolean mask over the
    head's ``[rows, T]`` input positions), so that it returns logits ``[n_selected, V]``."""
    head = gen.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda mod, args: (args[0][select],) + tuple(args[1:]))
    try:
        yield
    finally:
        hook.remove()


def context_logits(gen, ctx: Contexts, target: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, H, K, T, V]`` predicting each ``target [B, H, T]`` (or ``[B, T]``: ``H = 1``)
    token under each of the K contexts of its question; position t predicts ``target[..., t]``.

    Seq2seq: the encoder runs once per context and is shared by all H hypotheses. Decoder-only:
    one pass over ``prompt + target`` when ``H == 1`` (training), otherwise the prompt's KV cache
    is computed once and expanded to the H hypotheses.
    """
    if target.dim() == 2:
        target = target[:, None]
    b, h, t = target.shape
    return _logits(gen, ctx, target).view(b, h, ctx.n_docs, t, -1)


def context_token_logprobs(gen, ctx: Contexts, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(target_t | x, z, y<t) ``[B, K, T]`` for a ``[B, T]`` target, 0 where ``mask`` is False.

    The training pass: trailing columns masked in every row are not run, and the LM head and the
    log-softmax see only the unmasked positions (``[n_valid, V]`` logits instead of ``[B, K, T, V]``).
    Equal to ``gather(log_softmax(context_logits(...)))`` on the unmasked positions.
    """
    from unirag.rag.marginals import gather_log_softmax

    b, t_full = target.shape
    k = ctx.n_docs
    cols = mask.any(0).nonzero()
    t = int(cols.max()) + 1 if len(cols) else 1
    tgt = target[:, None, :t]
    sel = per_context(mask[:, None, :t], k)                                # rows (b, k), as _logits lays them out
    valid = _logits(gen, ctx, tgt, sel)                                     # [n_valid, V]
    ids = per_context(tgt, k)[sel]
    lp = gather_log_softmax(valid, ids[:, None])[:, 0]
    out = lp.new_zeros(b * k, t).masked_scatter(sel, lp)
    return torch.nn.functional.pad(out, (0, t_full - t)).view(b, k, t_full)


def _logits(gen, ctx: Contexts, target: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[B*H*K, T, V]`` for ``target [B, H, T]`` (rows (b, h, k)); with ``select`` (bool
    ``[B*H*K, T]``) only the selected positions' logits ``[n_selected, V]``."""
    b, h, t = target.shape
    k = ctx.n_docs
    rows = context_rows(b, h, k, target.device)
    tgt = per_context(target, k)                                       # [B*H*K, T]
    if select is not None and bool((live := select.any(1)).any()) and not bool(live.all()):
        rows, tgt, select = rows[live], tgt[live], select[live]          # rows with nothing to score do not run
    if ctx.is_seq2seq and h > 1:
        return _seq2seq_shared(gen, ctx, tgt, rows, t, select)
    if select is None or gen.get_output_embeddings() is None or not (ctx.is_seq2seq or h == 1):
        logits = _run(gen, ctx, tgt, rows, h, t)
        return logits if select is None else logits[select]
    head_select = select if ctx.is_seq2seq else torch.cat([select, select.new_zeros(len(select), 1)], 1)
    with _head_on(gen, head_select):                                  # decoder-only: the head sees T + 1 positions
        return _run(gen, ctx, tgt, rows, h, t)


def selected_logits(gen, ctx: Contexts, target: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Logits ``[n_selected, V]`` at the ``select`` positions (bool ``[B*H*K, T]``, rows (b, h, k))
    for ``target [B, H, T]``: the LM head runs only there when the generator allows it."""
    return _logits(gen, ctx, target, select)


def _seq2seq_shared(gen, ctx: Contexts, tgt: torch.Tensor, rows: torch.Tensor, t: int,
                    select: torch.Tensor | None) -> torch.Tensor:
    """Seq2seq scoring of several hypotheses per context: the encoder and the cross-attention keys
    and values run once per context (a one-token decoder step fills them), are expanded to the
    hypothesis rows, and the decoder runs each row's ``t`` positions. Same layout as :func:`_logits`."""
    from transformers import DynamicCache, EncoderDecoderCache

    enc = gen.get_encoder()(input_ids=ctx.input_ids, attention_mask=ctx.attention_mask,
                            return_dict=True).last_hidden_state
    mask = None if bool(ctx.attention_mask.all()) else ctx.attention_mask
    start = torch.full((enc.shape[0], 1), decoder_start_id(gen), dtype=tgt.dtype, device=tgt.device)
    with _head_on(gen, torch.zeros_like(start, dtype=torch.bool)):   # only the cache is wanted
        first = gen(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=start, use_cache=True,
                    return_dict=True)
    cross = first.past_key_values.cross_attention_cache
    cross.reorder_cache(rows)
    cache = EncoderDecoderCache(DynamicCache(), cross)
    dec_in = torch.cat([start[:1].expand(len(tgt), 1), tgt[:, :-1]], 1)
    kwargs = dict(encoder_outputs=(enc[rows],), attention_mask=None if mask is None else mask[rows],
                  decoder_input_ids=dec_in, past_key_values=cache, use_cache=True, return_dict=True)
    if select is None:
        return gen(**kwargs).logits
    with _head_on(gen, select):
        return gen(**kwargs).logits


def _run(gen, ctx: Contexts, tgt: torch.Tensor, rows: torch.Tensor, h: int, t: int) -> torch.Tensor:
    """The generator pass behind :func:`_logits`."""
    if ctx.is_seq2seq:
        enc = gen.get_encoder()(input_ids=ctx.input_ids, attention_mask=ctx.attention_mask, return_dict=True)
        hidden = enc.last_hidden_state[rows]
        start = torch.full((tgt.shape[0], 1), decoder_start_id(gen), dtype=tgt.dtype, device=tgt.device)
        dec_in = torch.cat([start, tgt[:, :-1]], 1)
        out = gen(encoder_outputs=(hidden,), attention_mask=ctx.attention_mask[rows], decoder_input_ids=dec_in,
                  use_cache=False, return_dict=True)
        logits = out.logits
    elif h == 1:
        ids = torch.cat([ctx.input_ids[rows], tgt], 1)
        mask = torch.cat([ctx.attention_mask[rows], torch.ones_like(tgt)], 1)
        out = gen(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False,
                  logits_to_keep=t + 1, return_dict=True)
        logits = out.logits if out.logits.dim() == 2 else out.logits[:, :-1]
    else:
        first = gen(input_ids=ctx.input_ids, attention_mask=ctx.attention_mask,
                    position_ids=positions(ctx.attention_mask), use_cache=True, logits_to_keep=1, return_dict=True)
        logits = first.logits[rows][:, -1:]
        if t > 1:
            cache = first.past_key_values
            cache.reorder_cache(rows)
            mask = torch.cat([ctx.attention_mask[rows], torch.ones_like(tgt)], 1)
            out = gen(input_ids=tgt[:, :-1], attention_mask=mask[:, :-1], position_ids=positions(mask)[:, -t:-1],
                      past_key_values=cache, use_cache=True, return_dict=True)
            logits = torch.cat([logits, out.logits], 1)
    return logits
