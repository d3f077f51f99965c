"""Turn OneGen examples into token ids, labels and batches with dynamic padding.

Labels follow the transformers convention (aligned with ``input_ids``, shifted inside the loss):
prompt tokens carry no loss; assistant tokens carry the LM loss, the retrieval token included (the
model learns when to retrieve); the token right after a retrieval token is masked; text between
the passage markers (inserted context, markers included) carries no loss, nor does the reply
after the passage of a retrieval with ``answer_loss`` false (up to the next line break, retrieval
token or the end of the message: an answer its passage does not support). The end-of-turn token
that closes an assistant message is labelled, so the model learns to stop.

A batch holds each distinct document once, whatever the number of retrievals that point at it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unirag.onegen.config import PARTNER, OneGenConfig
from unirag.onegen.data import OneGenDataError, OneGenExample, Retrieval, retrieval_marks

IGNORE = -100


@dataclass
class EncodedExample:
    """Token ids and labels of one example, the positions of its retrieval tokens and their supervision."""

    input_ids: list[int]
    labels: list[int]
    ret_pos: list[int]
    retrievals: list[Retrieval]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Chat-template text of ``messages`` with the assistant turn opened; plain ``role: text`` lines
    for tokenizers without a template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Chat-template text of a whole conversation (plain ``role: text`` lines without a template)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    eos = tokenizer.eos_token or ""
    return "".join(f"{m['role']}: {m['content']}{eos if m['role'] == 'assistant' else ''}\n" for m in messages)


def encode_document(tokenizer: Any, text: str, token_id: int, max_tokens: int) -> list[int]:
    """Token ids of a document: ``text`` (at most ``max_tokens`` tokens) followed by the document token."""
    ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
    return list(ids) + [token_id]


def _spans(text: str, start: str, end: str, lo: int, hi: int) -> list[tuple[int, int]]:
    out = []
    i = text.find(start, lo)
    while 0 <= i < hi:
        j = text.find(end, i + len(start))
        j = hi if j < 0 or j >= hi else j + len(end)
        out.append((i, j))
        i = text.find(start, j)
    return out


def _silent_replies(text: str, assistant: list[tuple[int, int]], passages: list[tuple[int, int]],
                    config: OneGenConfig, retrievals: Sequence[Retrieval]) -> list[tuple[int, int]]:
    """Character spans without LM loss: for each retrieval with ``answer_loss`` false, from the end of
    the first passage after its token to the next line break, retrieval token or end of message."""
    if all(r.answer_loss for r in retrievals):
        return []
    found = [i for a, b in assistant for i, _ in retrieval_marks(text, config, a, b)]
    out = []
    for n, (pos, ret) in enumerate(zip(found, retrievals)):
        if ret.answer_loss:
            continue
        end = next((b for a, b in assistant if a <= pos < b), len(text))
        if n + 1 < len(found):
            end = min(end, found[n + 1])
        start = next((pb for pa, pb in passages if pa >= pos), None)
        if start is None or start >= end:
            continue
        stop = text.find("\n", start, end)
        out.append((start, end if stop < 0 else stop))
    return out


def encode_example(ex: OneGenExample, tokenizer: Any, config: OneGenConfig, max_length: int | None = None,
                   where: str = "") -> EncodedExample:
    """Tokenise one example and build its labels (see the module docstring)."""
    text = render_chat(tokenizer, ex.messages)
    assistant: list[tuple[int, int]] = []
    cursor = 0
    for m in ex.messages:
        content = m["content"]
        i = text.find(content, cursor)
        if i < 0:  # some templates strip surrounding whitespace
            content = content.strip()
            i = text.find(content, cursor)
        if i < 0:
            raise OneGenDataError(f"{where or ex.id}: a message does not survive the chat template verbatim")
        if m["role"] == "assistant":
            assistant.append((i, i + len(content)))
        cursor = i + len(content)
    passages = [s for a, b in assistant for s in _spans(text, config.passage_start, config.passage_end, a, b)]
    silent = _silent_replies(text, assistant, passages, config, ex.retrievals)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    ret_ids = {tokenizer.convert_tokens_to_ids(config.token(r)) for r in config.retrieval_roles}
    eos = tokenizer.eos_token_id
    labels = [IGNORE] * len(ids)
    ret_pos: list[int] = []
    for k, (s, _) in enumerate(offsets):
        inside = next(((a, b) for a, b in assistant if a <= s < b), None)
        if inside is None:
            continue
        if any(a <= s < b for a, b in passages) or any(a <= s < b for a, b in silent):
            continue
        labels[k] = ids[k]
        if ids[k] in ret_ids:
            ret_pos.append(k)
    for _, b in assistant:  # the end-of-turn token closing an assistant message
        k = next((k for k, (s, _) in enumerate(offsets) if s >= b), None)
        if k is not None and ids[k] == eos:
            labels[k] = ids[k]
    for k in ret_pos:
        if k + 1 < len(labels):
            labels[k + 1] = IGNORE
    if len(ret_pos) != len(ex.retrievals):
        raise OneGenDataError(f"{where or ex.id}: field 'retrievals': {len(ex.retrievals)} entries but "
                              f"{len(ret_pos)} retrieval tokens after tokenisation")
    rets = list(ex.retrievals)
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
        keep = [i for i, p in enumerate(ret_pos) if p < max_length]
        ret_pos, rets = [ret_pos[i] for i in keep], [rets[i] for i in keep]
    return EncodedExample(ids, labels, ret_pos, rets)


class OneGenCollator:
    """Batch :class:`EncodedExample` rows: right padding to the batch's longest row, and the batch's
    distinct documents (positives, then hard negatives, each once) as ``text + document token``."""

    def __init__(self, tokenizer: Any, config: OneGenConfig, docs: Mapping[str, str], max_negatives: int = 1):
        self.tokenizer = tokenizer
        self.config = config
        self.docs = docs
        self.max_negatives = max_negatives
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._doc_cache: dict[tuple[str, str], list[int]] = {}

    def doc_ids(self, pid: str, role: str) -> list[int]:
        """Token ids of document ``pid`` ending with the token of ``role`` (cached)."""
        key = (pid, role)
        if key not in self._doc_cache:
            tid = self.tokenizer.convert_tokens_to_ids(self.config.token(role))
            self._doc_cache[key] = encode_document(self.tokenizer, self.docs[pid], tid, self.config.max_doc_tokens)
        return self._doc_cache[key]

    def __call__(self, rows: Sequence[EncodedExample]) -> dict[str, Any]:
        import torch

        width = max(len(r.input_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        ret_rows, ret_pos, ret_items = [], [], []
        for i, r in enumerate(rows):
            n = len(r.input_ids)
            input_ids[i, :n] = torch.tensor(r.input_ids)
            labels[i, :n] = torch.tensor(r.labels)
            mask[i, :n] = 1
            for p, ret in zip(r.ret_pos, r.retrievals):
                ret_rows.append(i)
                ret_pos.append(p)
                ret_items.append(ret)
        keys: dict[tuple[str, str], int] = {}
        for ret in ret_items:  # positives first, then hard negatives: stable, each document once
            for pid in ret.positives:
                keys.setdefault((pid, PARTNER[ret.role]), len(keys))
        for ret in ret_items:
            for pid in ret.negatives[: self.max_negatives]:
                keys.setdefault((pid, PARTNER[ret.role]), len(keys))
        R, D = len(ret_items), len(keys)
        pos = torch.zeros((R, D), dtype=torch.bool)
        neg = torch.zeros((R, D), dtype=torch.bool)
        cand = torch.zeros((R, D), dtype=torch.bool)
        for j, ret in enumerate(ret_items):
            role = PARTNER[ret.role]
            for (pid, prole), col in keys.items():
                cand[j, col] = prole == role
            for pid in ret.positives:
                pos[j, keys[(pid, role)]] = True
            for pid in ret.negatives[: self.max_negatives]:
                neg[j, keys[(pid, role)]] = True
        seqs = [self.doc_ids(pid, role) for (pid, role) in keys]
        dwidth = max((len(s) for s in seqs), default=0)
        doc_ids = torch.full((D, dwidth), self.pad_id, dtype=torch.long)
        doc_mask = torch.zeros((D, dwidth), dtype=torch.long)
        for k, s in enumerate(seqs):
            doc_ids[k, : len(s)] = torch.tensor(s)
            doc_mask[k, : len(s)] = 1
        return {
            "input_ids": input_ids, "attention_mask": mask, "labels": labels,
            "ret_rows": torch.tensor(ret_rows, dtype=torch.long), "ret_pos": torch.tensor(ret_pos, dtype=torch.long),
            "doc_input_ids": doc_ids, "doc_attention_mask": doc_mask,
            "pos_mask": pos, "neg_mask": neg, "cand_mask": cand,
            "doc_keys": list(keys),   # (passage id, document role) of each document row
        }
