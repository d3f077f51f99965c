"""The child of the ingest crash test: one add / delete / sync, to be killed at a random moment.

Kept apart from the test module so the fork server preloads only this (and what it imports).

The child tells the parent where it is through ``marks``, a shared array of three doubles (no lock,
so no semaphore is left behind by a killed child): ``marks[2]`` is set to 1 when the operation
begins (imports and the encoder are loaded by then), ``marks[0]`` to the seconds since then at
which the commit starts (the new version is complete beside the folder; fsync, then the atomic
swap) and ``marks[1]`` to those at which the swap was done (0 until then).
``pause`` seconds are slept before the fsync and again right after the swap, so that a kill drawn
inside the commit phase lands before the swap or after it (with the old version still beside the
folder) at will, not by luck of a few microseconds."""

from __future__ import annotations

import threading
import time

# imported once by the fork server, not by every child
import bm25s  # noqa: F401
import faiss  # noqa: F401
import Stemmer  # noqa: F401
import torch  # noqa: F401
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BertModel  # noqa: F401

from unirag.config import fs
from unirag.models import Encoder
from unirag.retrieval import bm25, ingest  # noqa: F401


def _instrument(t0: float, marks, pause: float) -> None:
    fsync_tree, exchange_paths = fs.fsync_tree, fs.exchange_paths

    def fsync_then_mark(root):
        marks[0] = time.monotonic() - t0
        time.sleep(pause)
        fsync_tree(root)

    def exchange_then_mark(a, b):
        done = exchange_paths(a, b)
        if done:
            marks[1] = time.monotonic() - t0
            time.sleep(pause)
        return done

    fs.fsync_tree, fs.exchange_paths = fsync_then_mark, exchange_then_mark


def run(op: str, ix: str, arg: str, encoder_dir: str, max_tokens: int, marks=None, pause: float = 0.0) -> None:
    torch.set_num_threads(1)  # a tiny model: threads only contend on a shared machine
    # tqdm (used, disabled, by BM25) would create a multiprocessing lock, a semaphore a killed child
    # cannot release (the resource tracker then warns of it at exit); a thread lock does here
    tqdm.set_lock(threading.RLock())
    enc = Encoder.from_pretrained(encoder_dir) if op != "delete" else None
    t0 = time.monotonic()
    if marks is not None:
        _instrument(t0, marks, pause)
        marks[2] = 1.0
    if op == "add":
        ingest.add_files(ix, [arg], enc, max_tokens=max_tokens)
    elif op == "delete":
        ingest.delete_documents(ix, [arg])
    else:
        ingest.sync_folder(ix, arg, enc, max_tokens=max_tokens)


def ready() -> None:
    """Nothing: starting it starts the fork server."""
