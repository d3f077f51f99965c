"""The child of the ingest crash test: one add / delete / sync, to be killed at a random moment.

Kept apart from the test module so the fork server preloads only this (and what it imports)."""

from __future__ import annotations

# imported once by the fork server, not by every child
import bm25s  # noqa: F401
import faiss  # noqa: F401
import Stemmer  # noqa: F401
import torch  # noqa: F401
from transformers import AutoModel, AutoTokenizer, BertModel  # noqa: F401

from unirag.models import Encoder
from unirag.retrieval import bm25, ingest  # noqa: F401


def run(op: str, ix: str, arg: str, encoder_dir: str, max_tokens: int) -> None:
    enc = Encoder.from_pretrained(encoder_dir) if op != "delete" else None
    if op == "add":
        ingest.add_files(ix, [arg], enc, max_tokens=max_tokens)
    elif op == "delete":
        ingest.delete_documents(ix, [arg])
    else:
        ingest.sync_folder(ix, arg, enc, max_tokens=max_tokens)


def ready() -> None:
    """Nothing: starting it starts the fork server."""
