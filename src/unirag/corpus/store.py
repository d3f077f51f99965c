"""An on-disk document store: row → passage and id → row without holding the corpus in memory.

Layout of a store folder (all plain files, no pickle):

- ``docs.jsonl``   one passage per line, in row order (the row is the vector index position);
- ``offsets.npy``  ``uint64[n + 1]`` byte offsets of each line in ``docs.jsonl``;
- ``id_hash.npy``  ``uint64[n]`` sorted 64-bit BLAKE2 hashes of the ids;
- ``id_rows.npy``  ``int64[n]`` the row of each hash in that order;
- ``store.json``   count and the SHA-256 of ``docs.jsonl``.

The ``.npy`` arrays are memory-mapped, so 21M passages cost a few hundred MB of page cache at most.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from unirag.corpus.passage import CorpusError, Passage


def _id_hash(pid: str) -> int:
    return int.from_bytes(hashlib.blake2b(pid.encode("utf-8"), digest_size=8).digest(), "little")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


class DocStore:
    """Read-only access to a store folder written by :meth:`DocStore.build`."""

    FILES = ("docs.jsonl", "offsets.npy", "id_hash.npy", "id_rows.npy", "store.json")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        missing = [f for f in self.FILES if not (self.path / f).is_file()]
        if missing:
            raise CorpusError(f"{self.path}: not a document store (missing {', '.join(missing)})")
        self._fd = -1
        self.info = self._read_info(self.path / "store.json")
        self._offsets = self._load_array("offsets.npy", np.uint64)
        self._hash = self._load_array("id_hash.npy", np.uint64)
        self._rows = self._load_array("id_rows.npy", np.int64)
        count = self.info["count"]
        if len(self._offsets) != count + 1:
            raise CorpusError(f"{self.path / 'offsets.npy'}: {len(self._offsets)} offsets do not match "
                              f"store.json count {count}")
        if len(self._hash) != count or len(self._rows) != count:
            raise CorpusError(f"{self.path}: id_hash.npy / id_rows.npy do not match store.json count {count}")
        docs = self.path / "docs.jsonl"
        size, expected = docs.stat().st_size, int(self._offsets[-1])
        if size != expected:
            raise CorpusError(f"{docs}: {size} bytes but the store expects {expected}: the file is truncated "
                              f"or altered; rebuild the index")
        self._fd = os.open(docs, os.O_RDONLY)

    @staticmethod
    def _read_info(path: Path) -> dict:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorpusError(f"{path}: corrupted store file (not JSON: {exc})") from None
        if (not isinstance(info, dict) or not isinstance(info.get("count"), int) or isinstance(info["count"], bool)
                or info["count"] < 0 or not isinstance(info.get("sha256"), str)):
            raise CorpusError(f"{path}: corrupted store file (needs an integer 'count' and a 'sha256')")
        return info

    def _load_array(self, name: str, dtype: type) -> np.ndarray:
        path = self.path / name
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CorpusError(f"{path}: unreadable array ({exc})") from None
        if arr.ndim != 1 or arr.dtype != dtype:
            raise CorpusError(f"{path}: expected a 1-D {np.dtype(dtype).name} array, got {arr.dtype} {arr.shape}")
        return arr

    # --- building -------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        passages: Iterable[Passage],
        path: str | os.PathLike,
        progress: bool = False,
    ) -> DocStore:
        """Write ``passages`` (streamed) into a new folder ``path``; ids must be unique."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        offsets = [0]
        hashes: list[int] = []
        digest = hashlib.sha256()
        it: Iterable[Passage] = passages
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(passages, desc="doc store", unit=" passages")
        with open(path / "docs.jsonl", "wb") as out:
            for passage in it:
                line = (json.dumps(passage.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
                out.write(line)
                digest.update(line)
                offsets.append(offsets[-1] + len(line))
                hashes.append(_id_hash(passage.id))
            out.flush()
            os.fsync(out.fileno())
        n = len(hashes)
        if n == 0:
            raise CorpusError(f"{path}: the corpus is empty: no passages to store")
        hash_arr = np.asarray(hashes, dtype=np.uint64)
        order = np.argsort(hash_arr, kind="stable")
        sorted_hash = hash_arr[order]
        np.save(path / "offsets.npy", np.asarray(offsets, dtype=np.uint64), allow_pickle=False)
        np.save(path / "id_hash.npy", sorted_hash, allow_pickle=False)
        np.save(path / "id_rows.npy", order.astype(np.int64), allow_pickle=False)
        info = {"format": "unirag-docstore/1", "count": n, "sha256": digest.hexdigest()}
        (path / "store.json").write_text(json.dumps(info, indent=2) + "\n")
        for name in cls.FILES:
            _fsync_file(path / name)
        store = cls(path)
        dup = np.nonzero(sorted_hash[1:] == sorted_hash[:-1])[0]
        for i in dup:  # equal hashes: a true duplicate id, or (astronomically rarely) a collision
            a, b = store[int(order[i])], store[int(order[i + 1])]
            if a.id == b.id:
                store.close()
                raise CorpusError(f"duplicate passage id {a.id!r} (rows {int(order[i])} and {int(order[i + 1])})")
        return store

    # --- reading --------------------------------------------------------------------------
    @property
    def checksum(self) -> str:
        """SHA-256 of the passages in row order."""
        return self.info["sha256"]

    def __len__(self) -> int:
        return int(self.info["count"])

    def _raw(self, row: int) -> dict:
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for a store of {len(self)} passages")
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        raw = os.pread(self._fd, end - start, start)  # pread: safe across threads
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorpusError(f"{self.path / 'docs.jsonl'}: row {row} is corrupted ({exc})") from None

    def __getitem__(self, row: int) -> Passage:
        data = self._raw(int(row))
        pid, title, text = data.pop("id"), data.pop("title", ""), data.pop("text")
        return Passage(id=pid, text=text, title=title, meta=data)

    def __iter__(self) -> Iterator[Passage]:
        for row in range(len(self)):
            yield self[row]

    def __contains__(self, pid: object) -> bool:
        return isinstance(pid, str) and self.row_of(pid, missing_ok=True) is not None

    def row_of(self, pid: str, missing_ok: bool = False) -> int | None:
        """Row of passage ``pid`` (``KeyError`` unless ``missing_ok``)."""
        h = np.uint64(_id_hash(pid))
        lo = int(np.searchsorted(self._hash, h, side="left"))
        hi = int(np.searchsorted(self._hash, h, side="right"))
        for i in range(lo, hi):
            row = int(self._rows[i])
            if self._raw(row)["id"] == pid:
                return row
        if missing_ok:
            return None
        raise KeyError(f"no passage with id {pid!r} in {self.path}")

    def get(self, pid: str) -> Passage:
        """The passage with id ``pid``."""
        return self[self.row_of(pid)]

    def ids(self, rows: Iterable[int]) -> list[str]:
        """Ids of the given rows (``-1`` rows give ``""``)."""
        return [self._raw(int(r))["id"] if r >= 0 else "" for r in rows]

    def close(self) -> None:
        """Close the open file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"DocStore({str(self.path)!r}, count={len(self)})"
