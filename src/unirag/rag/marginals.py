"""RAG-Sequence and RAG-Token marginal log-likelihoods and losses (Lewis et al. 2020), in log space.

Shapes: ``logits`` ``[B, K, T, V]`` (or ``[B*K, T, V]``), ``doc_scores`` ``[B, K]`` (unnormalised
p(z|x) scores), ``target`` ``[B, T]`` (the token each logit position predicts), ``mask`` ``[B, T]``.

The ``*_reference`` functions are the plain definitions (full log-softmax over the vocabulary);
the fast ones compute the same numbers from ``gather(logits) - logsumexp(logits)`` without
materialising ``[B, K, T, V]`` log-probabilities. Conventions follow the reference
implementation in ``transformers``: label smoothing mixes in ``eps / V`` times the summed
log-probabilities, ``exclude_bos`` drops the first target position from the likelihood (not
from the smoothing term), the doc prior enters the smoothing term ``V`` times.
"""

from __future__ import annotations

from typing import Literal

import torch

Reduction = Literal["none", "sum", "mean"]


def _f(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def _split(logits: torch.Tensor, doc_scores: torch.Tensor) -> torch.Tensor:
    b, k = doc_scores.shape
    return logits.view(b, k, *logits.shape[-2:]) if logits.dim() == 3 else logits


def _reduce(loss: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss


# ----------------------------------------------------------------------------- reference (one screen)

def rag_sequence_nll_reference(logits: torch.Tensor, doc_scores: torch.Tensor, target: torch.Tensor,
                               mask: torch.Tensor, epsilon: float = 0.0, exclude_bos: bool = False) -> torch.Tensor:
    """-log Σ_z p(z|x) Π_i p(y_i|x,z,y<i) per example ``[B]`` (plain definition)."""
    logits = _split(logits, doc_scores)
    B, K, T, V = logits.shape
    lp = _f(logits).log_softmax(-1)                                   # [B,K,T,V]
    doc_lp = _f(doc_scores).log_softmax(-1)                           # [B,K]
    m = mask.float()[:, None, :]                                          # [B,1,T]
    tok = lp.gather(-1, target[:, None, :, None].expand(B, K, T, 1)).squeeze(-1) * m
    ll = (doc_lp + tok[..., int(exclude_bos):].sum(-1)).logsumexp(1)      # [B]
    smooth = (V * doc_lp + (lp.sum(-1) * m).sum(-1)).logsumexp(1)
    return (1 - epsilon) * -ll + epsilon / V * -smooth


def rag_token_nll_reference(logits: torch.Tensor, doc_scores: torch.Tensor, target: torch.Tensor,
                            mask: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
    """-Σ_i log Σ_z p(z|x) p(y_i|x,z,y<i) per example ``[B]`` (plain definition)."""
    logits = _split(logits, doc_scores)
    V = logits.shape[-1]
    doc_lp = _f(doc_scores).log_softmax(-1)[:, :, None, None]         # [B,K,1,1]
    marg = (_f(logits).log_softmax(-1) + doc_lp).logsumexp(1)         # [B,T,V]
    m = mask.float()
    ll = (marg.gather(-1, target[..., None]).squeeze(-1) * m).sum(-1)     # [B]
    smooth = (marg.sum(-1) * m).sum(-1)
    return (1 - epsilon) * -ll + epsilon / V * -smooth


# ----------------------------------------------------------------------------- fast paths

class _GatherLogSoftmax(torch.autograd.Function):
    """``log_softmax(x)[..., idx]`` without keeping a log-softmax copy; backward writes
    ``g * (onehot - softmax)`` into one buffer."""

    @staticmethod
    def forward(ctx, x, idx):
        lse = _f(x).logsumexp(-1, keepdim=True)
        ctx.save_for_backward(x, idx, lse)
        return _f(x.gather(-1, idx)) - lse

    @staticmethod
    def backward(ctx, g):
        x, idx, lse = ctx.saved_tensors
        grad = torch.sub(_f(x), lse).exp_().mul_(-g)
        grad.scatter_add_(-1, idx, g)
        return grad.to(x.dtype), None


def gather_log_softmax(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``log_softmax(x, -1).gather(-1, idx)`` (``idx`` with a trailing size-1 dim), lean in memory."""
    return _GatherLogSoftmax.apply(x, idx)


def token_logprobs(logits: torch.Tensor, target: torch.Tensor, doc_scores: torch.Tensor) -> torch.Tensor:
    """log p(y_i|x,z,y<i) ``[B, K, T]`` as ``gather - logsumexp`` (no ``[B,K,T,V]`` log-softmax)."""
    logits = _split(logits, doc_scores)
    b, k, t, _ = logits.shape
    return gather_log_softmax(logits, target[:, None, :, None].expand(b, k, t, 1)).squeeze(-1)


def rag_sequence_nll(logits: torch.Tensor, doc_scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     epsilon: float = 0.0, exclude_bos: bool = False, reduction: Reduction = "none") -> torch.Tensor:
    """RAG-Sequence marginal NLL, equal to :func:`rag_sequence_nll_reference` (reduced as asked)."""
    logits = _split(logits, doc_scores)
    V = logits.shape[-1]
    m = mask.float()[:, None, :]
    tok = token_logprobs(logits, target, doc_scores) * m                  # [B,K,T]
    doc_lp = _f(doc_scores).log_softmax(-1)
    nll = -(doc_lp + tok[..., int(exclude_bos):].sum(-1)).logsumexp(1)
    if epsilon:
        lse = _f(logits).logsumexp(-1)
        summed = (_f(logits).sum(-1) - V * lse) * m                   # Σ_v log p(v|...)
        smooth = -(V * doc_lp + summed.sum(-1)).logsumexp(1)
        nll = (1 - epsilon) * nll + epsilon / V * smooth
    return _reduce(nll, reduction)


def rag_token_marginal(tok_lp: torch.Tensor, doc_scores: torch.Tensor) -> torch.Tensor:
    """log Σ_z p(z|x) p(y_i|x,z,y<i) ``[B, T]`` from per-document token log-probs ``[B, K, T]``."""
    return (tok_lp + _f(doc_scores).log_softmax(-1)[:, :, None]).logsumexp(1)


def rag_token_nll(logits: torch.Tensor, doc_scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  epsilon: float = 0.0, reduction: Reduction = "none") -> torch.Tensor:
    """RAG-Token marginal NLL, equal to :func:`rag_token_nll_reference` (reduced as asked).

    Without label smoothing only ``[B, K, T]`` numbers are formed; with it the marginal over the
    vocabulary is needed and formed once.
    """
    logits = _split(logits, doc_scores)
    m = mask.float()
    if epsilon:
        return _reduce(rag_token_nll_reference(logits, doc_scores, target, mask, epsilon), reduction)
    tok = token_logprobs(logits, target, doc_scores)
    return _reduce(-(rag_token_marginal(tok, doc_scores) * m).sum(-1), reduction)


def sequence_scores(tok_lp: torch.Tensor, doc_scores: torch.Tensor, mask: torch.Tensor,
                    exclude_bos: bool = False) -> torch.Tensor:
    """log p(z|x) + log p(y|x,z) ``[B, K]``: the joint whose logsumexp over z is RAG-Sequence's log p(y|x)."""
    tok = tok_lp * mask.float()[:, None, :]
    return _f(doc_scores).log_softmax(-1) + tok[..., int(exclude_bos):].sum(-1)


def rag_token_nll_from_logprobs(tok_lp: torch.Tensor, doc_scores: torch.Tensor, mask: torch.Tensor,
                                reduction: Reduction = "none") -> torch.Tensor:
    """RAG-Token NLL (no label smoothing) from token log-probs ``[B, K, T]``
    (e.g. :func:`unirag.rag.scoring.context_token_logprobs`)."""
    return _reduce(-(rag_token_marginal(tok_lp, doc_scores) * mask.float()).sum(-1), reduction)


def rag_sequence_nll_from_logprobs(tok_lp: torch.Tensor, doc_scores: torch.Tensor, mask: torch.Tensor,
                                   exclude_bos: bool = False, reduction: Reduction = "none") -> torch.Tensor:
    """RAG-Sequence NLL (no label smoothing) from token log-probs ``[B, K, T]``."""
    return _reduce(-sequence_scores(tok_lp, doc_scores, mask, exclude_bos).logsumexp(1), reduction)


def hf_targets(labels: torch.Tensor, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target, mask)`` from decoder ``labels`` as ``transformers``' RAG uses them: the labels shifted
    left by one, padded with ``pad_token_id``, masked where the target is the pad token."""
    target = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), pad_token_id)], 1)
    return target, target.ne(pad_token_id)
