"""Corpus: passages, readers (JSONL, TSV, folder), the passage splitter and the on-disk doc store."""

from unirag.corpus.jsonl import iter_jsonl
from unirag.corpus.passage import CorpusError, Passage
from unirag.corpus.readers import read_corpus, read_folder, read_jsonl, read_tsv
from unirag.corpus.splitter import split_passages
from unirag.corpus.store import DocStore

__all__ = [
    "CorpusError",
    "DocStore",
    "Passage",
    "iter_jsonl",
    "read_corpus",
    "read_folder",
    "read_jsonl",
    "read_tsv",
    "split_passages",
]
