"""Turn (question, retrieved passages, answer) into generator tensors for B × K contexts at once.

Seq2seq generators read ``"title / passage // question"`` as encoder input (the layout of the
original implementation). Decoder-only generators read a chat prompt holding the passage and the
question, left-padded so that every prompt ends at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from unirag.corpus.passage import Passage

if TYPE_CHECKING:
    import torch


@dataclass
class Contexts:
    """Generator inputs for ``B * K`` rows (row ``b * K + k`` = question b with passage k)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    n_docs: int
    is_seq2seq: bool

    @property
    def batch_size(self) -> int:
        """Number of questions B."""
        return self.input_ids.shape[0] // self.n_docs


class ContextBuilder:
    """Tokenises passages + questions (+ answers) for one generator tokenizer."""

    def __init__(self, tokenizer, is_seq2seq: bool, max_passage_tokens: int = 96, max_question_tokens: int = 64,
                 max_answer_tokens: int = 32, system_prompt: str = ""):
        self.tok = tokenizer
        self.is_seq2seq = is_seq2seq
        self.max_passage_tokens = max_passage_tokens
        self.max_question_tokens = max_question_tokens
        self.max_answer_tokens = max_answer_tokens
        self.system_prompt = system_prompt
        self._cut: dict[str, str] = {}
        self.chat = (not is_seq2seq) and bool(getattr(tokenizer, "chat_template", None))

    def _truncate(self, text: str, n: int) -> str:
        key = f"{n}\x00{text}"
        if key not in self._cut:
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            self._cut[key] = text if len(ids) <= n else self.tok.decode(ids[:n])
            if len(self._cut) > 100_000:
                self._cut.clear()
        return self._cut[key]

    def text(self, question: str, passage: Passage) -> str:
        """The generator input for one (question, passage) pair."""
        body = self._truncate(passage.text, self.max_passage_tokens)
        q = self._truncate(question, self.max_question_tokens)
        if self.is_seq2seq:
            return f"{passage.title} / {body} // {q}"
        user = f"Passage: {passage.title}. {body}\n\nQuestion: {q}"
        if self.chat:
            msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
            msgs.append({"role": "user", "content": user})
            return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return f"{self.system_prompt}\n\n{user}\nAnswer:" if self.system_prompt else f"{user}\nAnswer:"

    def contexts(self, questions: list[str], passages: list[list[Passage]]) -> Contexts:
        """Tokenised contexts for every question × its K passages (left-padded for decoder-only)."""
        k = len(passages[0])
        if any(len(p) != k for p in passages):
            raise ValueError("every question needs the same number of passages")
        texts = [self.text(q, p) for q, ps in zip(questions, passages) for p in ps]
        side = self.tok.padding_side
        self.tok.padding_side = "right" if self.is_seq2seq else "left"
        try:
            enc = self.tok(texts, padding=True, return_tensors="pt",
                           add_special_tokens=self.is_seq2seq or not self.chat)
        finally:
            self.tok.padding_side = side
        return Contexts(enc["input_ids"], enc["attention_mask"], k, self.is_seq2seq)

    def answers(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target [B, T], mask [B, T])``: answer tokens ending with EOS, right-padded.

        For seq2seq models the tokenizer's own special tokens are kept (BART: ``<s> … </s>``,
        T5: ``… </s>``); decoder-only answers get the EOS token appended.
        """
        import torch

        rows = []
        for a in answers:
            if self.is_seq2seq:
                ids = self.tok(a, add_special_tokens=True, truncation=True,
                               max_length=self.max_answer_tokens)["input_ids"]
            else:
                lead = "" if self.chat else " "
                ids = self.tok(lead + a, add_special_tokens=False)["input_ids"][: self.max_answer_tokens - 1]
                ids = ids + [self.tok.eos_token_id]
            rows.append(ids)
        t = max(len(r) for r in rows)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        target = torch.full((len(rows), t), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.bool)
        for i, r in enumerate(rows):
            target[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        return target, mask
