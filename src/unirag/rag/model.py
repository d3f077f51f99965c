"""RagModel: a trainable query encoder, a frozen FAISS index of document vectors, any generator.

p(z|x) = softmax_z(scale · q(x)·d(z)) over the top-K documents (computed in torch, so gradients
reach the query encoder; document vectors come back from the index, frozen); p(y|x,z) is any
``AutoModelForSeq2SeqLM`` or ``AutoModelForCausalLM`` run over the B × K contexts at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unirag.corpus.passage import Passage
from unirag.rag import marginals as M
from unirag.rag.config import RagConfig
from unirag.rag.inputs import ContextBuilder, Contexts
from unirag.rag.scoring import context_logits, context_token_logprobs

CONFIG_FILE = "rag_config.json"


@dataclass
class Retrieved:
    """Top-K passages per question with differentiable scores ``doc_scores [B, K]``."""

    passages: list[list[Passage]]
    doc_scores: torch.Tensor
    rows: list[list[int]] = field(default_factory=list)


@dataclass
class RagOutput:
    """Loss and the pieces it was computed from."""

    loss: torch.Tensor
    doc_scores: torch.Tensor
    token_logprobs: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    retrieved: Retrieved


class RagModel(torch.nn.Module):
    """Classic RAG (Lewis et al. 2020) over unirag's encoder, index and generator layers."""

    def __init__(self, question_encoder, generator, tokenizer, retriever=None, config: RagConfig | None = None):
        super().__init__()
        self.config = config or RagConfig()
        self.question_encoder = question_encoder          # unirag.models.Encoder
        self.query_model = question_encoder.model         # registered: trainable
        self.generator = generator
        self.tokenizer = tokenizer
        self.retriever = retriever
        self.is_seq2seq = bool(getattr(generator.config, "is_encoder_decoder", False))
        c = self.config
        self.builder = ContextBuilder(tokenizer, self.is_seq2seq, c.max_passage_tokens, c.max_question_tokens,
                                      c.max_answer_tokens, c.system_prompt)
        if c.freeze_question_encoder:
            self.query_model.requires_grad_(False)

    # ------------------------------------------------------------------ building and saving
    @classmethod
    def from_config(cls, config: RagConfig, index: str | os.PathLike | None = None) -> RagModel:
        """Load the parts named in ``config`` (aliases, folders or hub ids) and open the index."""
        from unirag.models.encoder import Encoder
        from unirag.models.generator import Generator

        enc = Encoder.from_pretrained(config.question_encoder)
        gen = Generator.from_pretrained(config.generator)
        model = cls(enc, gen.model, gen.tokenizer, None, config)
        model.attach_index(index or config.index)
        return model

    def attach_index(self, folder: str | os.PathLike | None) -> None:
        """Open ``folder`` (default: the packaged Wikipedia index) as the retriever."""
        from unirag.retrieval.dense import DenseRetriever

        if folder is None:
            from unirag.retrieval.build import ensure_default_index

            folder = ensure_default_index()
        self.retriever = DenseRetriever.load(folder, encoder=self.question_encoder)
        self.config.index = str(folder)

    def swap_index(self, folder: str | os.PathLike) -> None:
        """Hot-swap the knowledge source: a new index folder, same encoder; no model reload or retraining."""
        if self.retriever is None:
            self.attach_index(folder)
        else:
            self.retriever.swap_index(folder)
            self.config.index = str(folder)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``question_encoder/``, ``generator/`` (LoRA merged: a plain HF model) and ``rag_config.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.question_encoder.save_pretrained(path / "question_encoder")
        gen = self.generator
        if hasattr(gen, "merge_and_unload"):
            import copy

            gen = copy.deepcopy(gen).merge_and_unload()
        gen.save_pretrained(path / "generator")
        self.tokenizer.save_pretrained(path / "generator")
        cfg = self.config.to_dict()
        cfg["question_encoder"], cfg["generator"] = "question_encoder", "generator"
        (path / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, index: str | os.PathLike | None = None,
                        **overrides) -> RagModel:
        """Load a folder written by :meth:`save_pretrained` (parts resolved relative to it)."""
        path = Path(path)
        data = json.loads((path / CONFIG_FILE).read_text())
        for key in ("question_encoder", "generator"):
            if not os.path.isabs(data[key]) and (path / data[key]).exists():
                data[key] = str(path / data[key])
        data.update(overrides)
        return cls.from_config(RagConfig.from_dict(data, source=str(path / CONFIG_FILE)), index=index)

    # ------------------------------------------------------------------ retrieval
    def embed_questions(self, questions: list[str]) -> torch.Tensor:
        """Query vectors ``[B, d]`` (with grad unless the encoder is frozen)."""
        return self.question_encoder.embed(list(questions))

    def retrieve(self, questions: list[str], n_docs: int | None = None) -> Retrieved:
        """Top-K passages from the index and their scores q·d (differentiable in q)."""
        k = n_docs or self.config.n_docs
        q = self.embed_questions(questions)
        res = self.retriever.search_vectors(q.detach().float().cpu().numpy(), k, return_vectors=True)
        if (res.rows < 0).any():
            raise ValueError(f"the index holds fewer than {k} documents")
        d = torch.from_numpy(res.vectors).to(q.device, q.dtype)
        scores = torch.einsum("bd,bkd->bk", q, d) * self.config.doc_score_scale
        return Retrieved([res.passages(i) for i in range(len(questions))], scores, res.rows.tolist())

    # ------------------------------------------------------------------ likelihoods
    def contexts(self, questions: list[str], passages: list[list[Passage]]) -> Contexts:
        """Generator inputs for every question × passage."""
        ctx = self.builder.contexts(questions, passages)
        dev = next(self.generator.parameters()).device
        return Contexts(ctx.input_ids.to(dev), ctx.attention_mask.to(dev), ctx.n_docs, ctx.is_seq2seq)

    def forward(self, questions: list[str], answers: list[str], variant: str | None = None,
                reduction: M.Reduction = "mean", retrieved: Retrieved | None = None) -> RagOutput:
        """Marginal NLL of ``answers`` given ``questions`` (RAG-Token or RAG-Sequence)."""
        retrieved = retrieved or self.retrieve(questions)
        ctx = self.contexts(questions, retrieved.passages)
        target, mask = self.builder.answers(answers)
        target, mask = target.to(ctx.input_ids.device), mask.to(ctx.input_ids.device)
        ds = retrieved.doc_scores.to(ctx.input_ids.device)
        c = self.config
        sequence = (variant or c.variant) == "sequence"
        excl = sequence and c.exclude_bos_score and self._starts_with_bos(target)
        if not c.label_smoothing:   # lean pass: LM head and log-softmax on the answer tokens only
            tok = context_token_logprobs(self.generator, ctx, target, mask)
            loss = (M.rag_sequence_nll_from_logprobs(tok, ds, mask, excl, reduction) if sequence
                    else M.rag_token_nll_from_logprobs(tok, ds, mask, reduction))
            return RagOutput(loss, ds, tok.detach(), target, mask, retrieved)
        logits = context_logits(self.generator, ctx, target)[:, 0]            # [B, K, T, V]
        if sequence:
            loss = M.rag_sequence_nll(logits, ds, target, mask, c.label_smoothing, excl, reduction)
        else:
            loss = M.rag_token_nll(logits, ds, target, mask, c.label_smoothing, reduction)
        tok = M.token_logprobs(logits.detach(), target, ds)
        return RagOutput(loss, ds, tok, target, mask, retrieved)

    def _starts_with_bos(self, target: torch.Tensor) -> bool:
        bos = self.tokenizer.bos_token_id
        return bos is not None and bool(target[:, 0].eq(bos).all())

    def generate(self, questions: list[str], **kwargs) -> list:
        """Answer ``questions``: retrieve, decode (``decoding`` = greedy / sample / beam for RAG-Token,
        thorough / fast for RAG-Sequence) and attribute; returns :class:`~unirag.rag.answer.RagAnswer`."""
        from unirag.rag.answer import answer_questions

        return answer_questions(self, list(questions), **kwargs)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimiser updates (query encoder unless frozen, generator or its adapters)."""
        return [p for p in self.parameters() if p.requires_grad]

