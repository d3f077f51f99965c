import numpy as np
import pytest

from tests.tolerance import assert_f32_close
from unirag.index import Index, IndexFormatError, IndexMismatchError


def _data(n=500, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_search_equals_brute_force():
    x, q = _data(), _data(7, seed=1)
    idx = Index(16, "Flat")
    idx.add(x)
    scores, rows = idx.search(q, 5)
    expect = np.argsort(-(q @ x.T), axis=1)[:, :5]
    assert (rows == expect).all()
    # inner products of unit vectors over 16 dims (faiss's kernel against numpy's): sum |q_i x_i| <= 1
    assert_f32_close(scores, np.take_along_axis(q @ x.T, expect, 1), 16, magnitude=1.0)
    np.testing.assert_array_equal(idx.reconstruct(rows[:, :2]), x[rows[:, :2]])   # a Flat index stores copies
    assert idx.reconstruct(np.array([-1])).sum() == 0


@pytest.mark.parametrize("factory", ["HNSW16", "IVF4,Flat", "SQ8"])
def test_other_kinds_find_self(factory):
    x = _data(400)
    idx = Index(16, factory)
    idx.add(x)
    idx.set_params(**({"nprobe": 4} if "IVF" in factory else {"efSearch": 64} if "HNSW" in factory else {}))
    _, rows = idx.search(x[:20], 1)
    assert (rows[:, 0] == np.arange(20)).mean() >= 0.9
    assert idx.reconstruct(rows[:3, :1]).shape == (3, 1, 16)


def test_save_load_and_checksums(tmp_path):
    x = _data()
    idx = Index(16, "Flat")
    idx.add(x)
    idx.manifest.encoder = "enc"
    idx.save(tmp_path / "ix")
    back = Index.load(tmp_path / "ix")
    assert back.manifest.encoder == "enc" and back.manifest.count == 500 and len(back) == 500
    assert (back.search(x[:3], 3)[1] == idx.search(x[:3], 3)[1]).all()
    f = tmp_path / "ix" / "index.faiss"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(IndexFormatError, match="index.faiss: checksum mismatch"):
        Index.load(tmp_path / "ix")
    f.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])  # one flipped byte
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        Index.load(tmp_path / "ix")
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="unreadable FAISS file|does not match"):
        Index.load(tmp_path / "ix", verify=False)


def test_clear_errors(tmp_path):
    with pytest.raises(IndexFormatError, match="unknown or invalid FAISS factory string 'Bogus7'"):
        Index(16, "Bogus7")
    idx = Index(16, "Flat")
    idx.add(_data())
    idx.manifest.encoder = "enc-a"
    with pytest.raises(IndexMismatchError, match="dimension 8 but the index holds 16-dimensional vectors from encoder 'enc-a'"):
        idx.search(np.zeros((1, 8), np.float32), 3)
    with pytest.raises(IndexFormatError, match="no such index folder"):
        Index.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="not a unirag index"):
        Index.load(tmp_path / "empty")
    with pytest.raises(IndexFormatError, match="cannot train"):
        Index(16, "IVF64,Flat").add(_data(10))


def test_save_replaces_atomically(tmp_path):
    a, b = Index(16), Index(16)
    a.add(_data(10))
    b.add(_data(20))
    a.save(tmp_path / "ix")
    b.save(tmp_path / "ix")
    assert len(Index.load(tmp_path / "ix")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no temp folders left
