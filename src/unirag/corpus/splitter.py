"""DPR-style passage splitting: fixed windows of words, optional overlap."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from unirag.corpus.passage import Passage


def split_passages(docs: Iterable[Passage], words: int = 100, overlap: int = 0) -> Iterator[Passage]:
    """Split each document into windows of ``words`` words sharing ``overlap`` words.

    A document no longer than ``words`` stays whole and keeps its id; otherwise pieces get
    ids ``"<id>#<n>"`` and meta ``doc_id`` / ``chunk``. DPR used 100 words with no overlap.
    """
    from unirag.config.errors import UsageError

    if words <= 0:
        raise UsageError(f"split_passages: words must be positive, got {words}")
    if not 0 <= overlap < words:
        raise UsageError(f"split_passages: overlap must be in [0, words={words}), got {overlap}")
    return _split(docs, words, overlap)


def _split(docs: Iterable[Passage], words: int, overlap: int) -> Iterator[Passage]:
    step = words - overlap
    for doc in docs:
        tokens = doc.text.split()
        if len(tokens) <= words:
            yield doc
            continue
        for n, start in enumerate(range(0, len(tokens), step)):
            piece = tokens[start : start + words]
            if n > 0 and start + overlap >= len(tokens):
                break
            meta = {**doc.meta, "doc_id": doc.id, "chunk": n}
            yield Passage(id=f"{doc.id}#{n}", text=" ".join(piece), title=doc.title, meta=meta)
