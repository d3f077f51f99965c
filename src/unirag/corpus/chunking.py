"""Structure-aware passages: a :class:`~unirag.corpus.documents.Document` cut into passages of at
most ``max_tokens`` tokens of the index's encoder's tokenizer.

Passages never cross a section (heading) or a PDF page, prefer to end at a paragraph boundary,
then at a sentence end, and are cut only between words (a single word longer than the budget is a
passage of its own). ``overlap`` tokens of whole words are repeated at the start of the next
passage of the same section. Each passage's text is exactly ``document.text[char_start:char_end]``.

Passage ids are ``"<document id>#<n>"`` (``n`` counts from 0 in document order, so an unchanged
file gives the same ids again); JSONL / TSV rows keep their own id: ``"<document id>#<row id>"``.
Meta: ``source``, ``doc_id``, ``chunk``, ``format``, ``page`` (PDF), ``section`` (the innermost
heading), ``char_start`` / ``char_end`` and ``cite``, a citation such as
``report.pdf, p. 3, "Results"``.

``split_words`` gives DPR-style windows of that many words instead (the structure is ignored,
every word counts 1; page and section are those of the window's first word).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from unirag.corpus.documents import Document
from unirag.corpus.passage import Passage

__all__ = ["TokenCounter", "chunk_document", "cite"]

_WORD = re.compile(r"\S+")
_SENT_END = (".", "!", "?", ".\"", ".”", "!\"", "?\"", ".)", ":")


class TokenCounter:
    """Tokens per word of a text, from a Hugging Face tokenizer of transformers or of the
    ``tokenizers`` library (what an ONNX encoder carries); ``None``: one per word. ``name`` names
    the tokenizer in what the chunking records (default: the tokenizer's own name)."""

    def __init__(self, tokenizer: Any = None, name: str | None = None):
        self.raw = type(tokenizer).__module__.startswith("tokenizers")
        if self.raw:  # a copy that never truncates: whole documents are counted
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(tokenizer.to_str())
            tokenizer.no_truncation()
            tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.fast = bool(getattr(tokenizer, "is_fast", False))
        self._name = name

    @property
    def name(self) -> str:
        """What counts tokens (the tokenizer's name, or ``words``)."""
        if self.tokenizer is None:
            return "words"
        return self._name or str(getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__)

    def per_word(self, text: str, starts: Sequence[int]) -> np.ndarray:
        """Number of tokens of each word of ``text`` (words start at ``starts``)."""
        n = len(starts)
        if self.tokenizer is None or n == 0:
            return np.ones(n, dtype=np.int64)
        if self.fast or self.raw:
            if self.raw:
                offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
            else:
                offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                         verbose=False)["offset_mapping"]
            tok_starts = [s for s, e in offsets if e > s]
            owner = np.searchsorted(np.asarray(starts), np.asarray(tok_starts, dtype=np.int64), side="right") - 1
            counts = np.bincount(owner[owner >= 0], minlength=n)
            return np.maximum(counts, 1)
        words = [m.group() for m in _WORD.finditer(text)]
        return np.asarray([max(1, len(self.tokenizer.tokenize(w))) for w in words], dtype=np.int64)

    def count(self, text: str) -> int:
        """Tokens of ``text`` (no special tokens)."""
        return int(self.per_word(text, [m.start() for m in _WORD.finditer(text)]).sum())


def cite(source: str, page: int | None = None, section: str = "") -> str:
    """``report.pdf, p. 3, "Results"`` (page and section when known)."""
    parts = [source]
    if page is not None:
        parts.append(f"p. {page}")
    if section:
        parts.append(f'"{section}"')
    return ", ".join(parts)


def chunk_document(doc: Document, counter: TokenCounter | None = None, max_tokens: int = 200, overlap: int = 0,
                   split_words: int = 0) -> list[Passage]:
    """The passages of ``doc`` (see the module doc)."""
    from unirag.config.errors import UsageError

    if split_words:
        max_tokens, counter = split_words, TokenCounter(None)
    counter = counter or TokenCounter(None)
    if max_tokens < 1:
        raise UsageError(f"max_tokens must be positive, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise UsageError(f"overlap must be in [0, max_tokens={max_tokens}), got {overlap}")
    if doc.format in ("jsonl", "tsv"):
        return _records(doc)
    text = doc.text
    budget = max_tokens
    if not split_words:  # the title is embedded with every passage ("title. text"): leave it room
        budget = max(max_tokens - counter.count(doc.title + ".") if doc.title else max_tokens, max_tokens // 2)
    # words of the whole document: start, end, tokens, block index
    starts, ends, blk = [], [], []
    toks: list[np.ndarray] = []
    for bi, b in enumerate(doc.blocks):
        ws = [(m.start() + b.start, m.end() + b.start) for m in _WORD.finditer(b.text)]
        if not ws:
            continue
        starts += [s for s, _ in ws]
        ends += [e for _, e in ws]
        blk += [bi] * len(ws)
        toks.append(counter.per_word(b.text, [s - b.start for s, _ in ws]))
    if not starts:
        return []
    ntok = np.concatenate(toks)
    blk_arr = np.asarray(blk)
    # runs of words that may share a passage: same section and page (one run in word mode)
    keys = [(b.headings, b.page) for b in doc.blocks]
    runs: list[tuple[int, int]] = []
    lo = 0
    for i in range(1, len(starts) + 1):
        if i == len(starts) or (not split_words and keys[blk[i]] != keys[blk[i - 1]]):
            runs.append((lo, i))
            lo = i
    out: list[Passage] = []
    cum = np.concatenate([[0], np.cumsum(ntok)])
    for lo, hi in runs:
        i = lo
        while i < hi:
            # longest window [i, j) within the budget
            j = int(np.searchsorted(cum, cum[i] + budget, side="right")) - 1
            j = min(max(j, i + 1), hi)
            if j < hi and not split_words:
                j = _better_cut(i, j, blk_arr, text, ends, cum, budget)
            b = doc.blocks[blk[i]]
            out.append(_passage(doc, len(out), starts[i], ends[j - 1], b.page, b.section))
            if j >= hi:
                break
            k = j  # step back over ``overlap`` tokens of whole words
            while overlap and k - 1 > i and cum[j] - cum[k - 1] <= overlap:
                k -= 1
            i = k
    return out


def _better_cut(i: int, j: int, blk: np.ndarray, text: str, ends: list[int], cum: np.ndarray, budget: int) -> int:
    """Move the end of window [i, j) back to a paragraph boundary, else a sentence end, when that
    keeps at least half the budget."""
    floor = cum[i] + budget / 2
    for k in range(j, i, -1):  # a block boundary between word k-1 and word k
        if cum[k] < floor:
            break
        if blk[k] != blk[k - 1]:
            return k
    for k in range(j, i, -1):
        if cum[k] < floor:
            break
        if text[ends[k - 1] - 2 : ends[k - 1]].endswith(_SENT_END):
            return k
    return j


def _passage(doc: Document, n: int, start: int, end: int, page: int | None, section: str) -> Passage:
    meta: dict[str, Any] = {"source": doc.id, "doc_id": doc.id, "chunk": n, "format": doc.format}
    if page is not None:
        meta["page"] = page
    if section:
        meta["section"] = section
    meta.update(char_start=start, char_end=end, cite=cite(doc.id, page, section))
    return Passage(id=f"{doc.id}#{n}", text=doc.text[start:end], title=doc.title, meta=meta)


def _records(doc: Document) -> list[Passage]:
    out = []
    for n, b in enumerate(doc.blocks):
        meta = {**b.meta, "source": doc.id, "doc_id": doc.id, "chunk": n, "format": doc.format,
                "record_id": b.record_id, "char_start": b.start, "char_end": b.end,
                "cite": cite(doc.id, None, b.title)}
        out.append(Passage(id=f"{doc.id}#{b.record_id}", text=b.text, title=b.title, meta=meta))
    return out
