"""High-level answering with a RagModel: retrieval, decoding and attribution in one call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from unirag.corpus.passage import Passage

if TYPE_CHECKING:
    from unirag.rag.model import RagModel



@dataclass
class RagAnswer:
    """A generated answer with its retrieved passages, prior p(z|x) and posterior attribution.

    ``token_posteriors[i][k]`` = p(z_k | x, y_i, y<i) (RAG-Token), ``doc_posterior[k]`` = p(z_k | x, y).
    """

    question: str
    answer: str
    tokens: list[int]
    score: float
    passages: list[Passage]
    doc_prior: list[float]
    doc_posterior: list[float]
    token_posteriors: list[list[float]]
    spans: list = field(default_factory=list)
    doc_scores: list[float] = field(default_factory=list)
    context_tokens: int = 0


def answer_questions(model: RagModel, questions: list[str], variant: str | None = None, decoding: str | None = None,
                     num_beams: int = 4, max_new_tokens: int | None = None, temperature: float = 1.0,
                     top_k: int = 0, top_p: float = 1.0, n_docs: int | None = None,
                     attribution: bool = True, generator: torch.Generator | None = None) -> list[RagAnswer]:
    """Retrieve, decode and attribute; one :class:`RagAnswer` per question.

    ``decoding``: greedy / sample / beam (RAG-Token marginal) or thorough / fast (RAG-Sequence);
    the default follows ``variant`` (greedy for token, thorough for sequence). ``generator``
    is the private random generator of sampling.
    """
    from unirag.rag import attribution as A
    from unirag.rag import decoding as D

    variant = variant or model.config.variant
    decoding = decoding or ("greedy" if variant == "token" else "thorough")
    if decoding in ("greedy", "sample") and variant != "token":
        raise ValueError("greedy/sample decoding is RAG-Token decoding; use thorough or fast for RAG-Sequence")
    t = max_new_tokens or model.config.max_answer_tokens
    tok = model.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    was = model.training
    model.eval()
    with torch.no_grad():
        ret = model.retrieve(questions, n_docs)
        ctx = model.contexts(questions, ret.passages)
        ds = ret.doc_scores.to(ctx.input_ids.device)
        g = model.generator
        if decoding in ("greedy", "sample"):
            out = D.token_sample(g, ctx, ds, t, eos, pad, do_sample=decoding == "sample", temperature=temperature,
                                 top_k=top_k, top_p=top_p, generator=generator)
        elif decoding == "beam":
            out = D.token_beam_search(g, ctx, ds, num_beams, t, eos, pad)
        elif decoding == "thorough":
            out = D.sequence_thorough(g, ctx, ds, num_beams, t, eos, pad, tok.bos_token_id)
        elif decoding == "fast":
            out = D.sequence_fast(g, ctx, ds, num_beams, t, eos, pad)
        else:
            raise ValueError(f"unknown decoding {decoding!r}: greedy, sample, beam, thorough or fast")
        answers = []
        if attribution:
            uniq = [[s] for s in out.tokens]
            target, mask, _ = D.pad_hypotheses(uniq, pad, eos, ds.device)
            tok_lp = D.hypothesis_logprobs(g, ctx, target, mask)[:, 0]
            tpost = A.token_posteriors(tok_lp, ds)
            spost = A.sequence_posterior(tok_lp, ds, mask[:, 0])
        prior = ds.float().softmax(-1)
        n_ctx = ctx.attention_mask.reshape(len(questions), -1).sum(1).tolist()
        for i, q in enumerate(questions):
            toks = out.tokens[i]
            text = tok.decode(toks, skip_special_tokens=True).strip()
            tp = tpost[i, : len(toks)] if attribution else None
            answers.append(RagAnswer(
                q, text, toks, float(out.scores[i]), ret.passages[i], prior[i].tolist(),
                spost[i].tolist() if attribution else [], tp.tolist() if attribution else [],
                A.spans(toks, tp, tok) if attribution else [], ds[i].float().tolist(), int(n_ctx[i])))
    model.train(was)
    return answers

