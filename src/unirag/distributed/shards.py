"""A shard set: an index folder split into N ordinary index folders by a stable hash of the passage id.

Layout::

    <set>/shards.json          format, shard count, hash, the source's manifest fields, per-shard counts
    <set>/route.npy            int64[count]: global row -> shard * 2**40 + row in that shard
    <set>/shard-000/ ...       ordinary index folders (manifest, index.faiss, docs/), each also holding
    <set>/shard-000/global_rows.npy   int64[shard count]: row in the shard -> global row (ascending)

Global rows are the rows of the source folder, so a sharded search reports the same rows, ids and
scores as a search of the unsplit index. Passage ``id`` lives in shard ``blake2b-64(id) mod N``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from unirag.index.errors import IndexFormatError
from unirag.index.folder import IndexFolder

SHARDS_FILE = "shards.json"
ROUTE_FILE = "route.npy"
GLOBAL_ROWS_FILE = "global_rows.npy"
FORMAT = "unirag-shards/1"
HASH = "blake2b-64(id) mod n"
LOCAL_BITS = 40  # a shard holds up to 2**40 rows


def shard_of(pid: str, n_shards: int) -> int:
    """The shard of passage ``pid``: the first 8 bytes of its BLAKE2b digest (little-endian) mod ``n_shards``."""
    return int.from_bytes(hashlib.blake2b(pid.encode("utf-8"), digest_size=8).digest(), "little") % n_shards


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def is_shard_set(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a shard-set folder (holds ``shards.json``)."""
    return (Path(path) / SHARDS_FILE).is_file()


def read_shard_set(path: str | os.PathLike) -> dict[str, Any]:
    """``shards.json`` of a shard set, checked (format, shard folders present)."""
    path = Path(path)
    f = path / SHARDS_FILE
    if not f.is_file():
        raise IndexFormatError(f"{path}: not a shard set (no {SHARDS_FILE}; split a folder with `unirag index shard`)")
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{f}: corrupted ({exc})") from None
    if info.get("format") != FORMAT:
        raise IndexFormatError(f"{f}: unsupported format {info.get('format')!r} (expected {FORMAT!r})")
    for s in info["shards"]:
        if not IndexFolder(path / s["name"]).exists():
            raise IndexFormatError(f"{path / s['name']}: shard folder missing or incomplete")
    return info


def split_index(folder: str | os.PathLike, out: str | os.PathLike, n_shards: int, progress: bool = False) -> Path:
    """Split the dense index folder ``folder`` into ``n_shards`` shard folders under ``out`` (written
    atomically). Each shard keeps the source's factory, metric, encoder and training (an IVF / PQ
    index is cloned with its trained quantizer and refilled), and holds the passages whose id hashes
    to it, in global row order. BM25 is not split (a shard set serves dense search)."""
    import faiss

    from unirag.config.errors import UsageError
    from unirag.config.fs import atomic_dir
    from unirag.corpus.store import DocStore
    from unirag.index.vector import Index
    from unirag.retrieval.build import finish_folder

    if n_shards < 1 or n_shards >= 2 ** 15:
        raise UsageError(f"--shards: expected 1 to 32767 shards, got {n_shards}")
    src = IndexFolder(folder)
    index = Index.load(src.path)
    store = DocStore(src.docs_dir)
    m = index.manifest
    n = len(store)
    if n != len(index):
        raise IndexFormatError(f"{src.path}: {n} passages but {len(index)} vectors")
    assign = np.fromiter((shard_of(pid, n_shards) for pid in store.ids(range(n))), dtype=np.int64, count=n)
    route = np.empty(n, dtype=np.int64)
    shards = []
    out = Path(out)
    with atomic_dir(out) as tmp:
        for s in range(n_shards):
            rows = np.nonzero(assign == s)[0].astype(np.int64)
            route[rows] = (s << LOCAL_BITS) | np.arange(len(rows), dtype=np.int64)
            sub = Path(tmp) / shard_name(s)
            layout = IndexFolder(sub)
            sub_store = DocStore.build((store[int(r)] for r in rows), layout.docs_dir) if len(rows) else None
            if sub_store is None:
                raise UsageError(f"shard {s} of {n_shards} would be empty ({n} passages): use fewer shards")
            np.save(sub / GLOBAL_ROWS_FILE, rows, allow_pickle=False)
            fi = faiss.clone_index(index.faiss_index)
            fi.reset()
            part = Index(m.dim, m.factory, m.metric, faiss_index=fi)
            pm = part.manifest
            pm.encoder, pm.encoder_info = m.encoder, dict(m.encoder_info)
            for start in range(0, len(rows), 50_000):
                part.add(index.reconstruct(rows[start:start + 50_000]))
            extra = {"kinds": ["dense"], "shard": {"index": s, "of": n_shards, "hash": HASH,
                                                    "source_corpus_sha256": m.corpus_sha256}}
            finish_folder(sub, sub_store, part, pm, extra)
            shards.append({"name": shard_name(s), "count": int(len(rows))})
            if progress:
                print(f"shard {s + 1}/{n_shards}: {len(rows)} passages", flush=True)
        np.save(Path(tmp) / ROUTE_FILE, route, allow_pickle=False)
        info = {"format": FORMAT, "n_shards": n_shards, "hash": HASH, "count": n, "dim": m.dim,
                "factory": m.factory, "metric": m.metric, "encoder": m.encoder, "encoder_info": m.encoder_info,
                "corpus_sha256": m.corpus_sha256, "source": str(src.path.resolve()), "shards": shards}
        (Path(tmp) / SHARDS_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    store.close()
    return out


def balance(info: dict[str, Any]) -> float:
    """Largest relative deviation of a shard's size from the mean (0.03 = within 3%)."""
    counts = np.array([s["count"] for s in info["shards"]], dtype=np.float64)
    return float(np.max(np.abs(counts - counts.mean())) / counts.mean())
