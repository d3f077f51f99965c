"""Which passage supported which words: document posteriors given the generated answer.

RAG-Token: p(z | x, y_i, y<i) ∝ p(z|x) p(y_i|x,z,y<i) for every generated token i.
RAG-Sequence: p(z | x, y) ∝ p(z|x) Π_i p(y_i|x,z,y<i), one posterior per answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def token_posteriors(tok_lp: torch.Tensor, doc_scores: torch.Tensor) -> torch.Tensor:
    """``[B, T, K]`` posteriors over documents for each answer token (``tok_lp [B, K, T]``)."""
    joint = tok_lp.float() + doc_scores.float().log_softmax(-1)[:, :, None]
    return joint.softmax(1).transpose(1, 2)


def sequence_posterior(tok_lp: torch.Tensor, doc_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` posterior over documents given the whole answer."""
    ll = (tok_lp.float() * mask.float()[:, None, :]).sum(-1)
    return (ll + doc_scores.float().log_softmax(-1)).softmax(-1)


@dataclass
class Span:
    """Consecutive answer text attributed to one document (index into the retrieved list)."""

    text: str
    doc: int
    prob: float


def spans(tokens: list[int], post: torch.Tensor, tokenizer) -> list[Span]:
    """Group consecutive tokens whose most probable document is the same into text spans
    (``post [T, K]``); a span's ``prob`` is the mean posterior of its document over its tokens."""
    groups: list[tuple[int, list[int], list[float]]] = []
    best = post.argmax(-1).tolist()
    for i, tok in enumerate(tokens):
        p = float(post[i, best[i]])
        if groups and groups[-1][0] == best[i]:
            groups[-1][1].append(tok)
            groups[-1][2].append(p)
        else:
            groups.append((best[i], [tok], [p]))
    out = [Span(tokenizer.decode(ids, skip_special_tokens=True), d, sum(ps) / len(ps)) for d, ids, ps in groups]
    return [s for s in out if s.text.strip()]
