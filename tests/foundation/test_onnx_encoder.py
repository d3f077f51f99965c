"""Queries embedded on ONNX Runtime: the export equals the torch encoder, a retriever opened after
the export searches without importing torch, and the torch encoder still loads when passages must
be embedded."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import PASSAGES
from unirag.corpus.passage import Passage

pytest.importorskip("onnxruntime")

QUERIES = ["who wrote it", "a much longer query about the history of the passage, with punctuation!", "x"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UNIRAG_ONNX", "1")
    return tmp_path / "cache"


def test_export_gives_the_torch_vectors(cache, tiny_encoder_dir):
    from unirag.models.encoder import Encoder
    from unirag.models.onnx_encoder import OnnxEncoder, export, export_dir

    enc = Encoder.from_pretrained(str(tiny_encoder_dir))
    path = export(enc, tiny_encoder_dir)
    assert path == export_dir(tiny_encoder_dir) and path.is_relative_to(cache)
    onnx = OnnxEncoder(path)
    assert (onnx.name, onnx.dim, onnx.info()) == (enc.name, enc.dim, enc.info())
    want = enc.encode(QUERIES, sort_by_length=False)
    got = onnx.encode(QUERIES, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-5)  # float32 rounding of two kernels
    assert not np.allclose(got[0], got[1], atol=1e-3)  # distinct queries, distinct vectors
    ids = [e.ids for e in onnx.tokenizer.encode_batch(QUERIES)]
    assert ids == enc.tokenizer(QUERIES)["input_ids"]  # the same tokens (padding is per batch)
    assert export(Encoder.from_pretrained(str(tiny_encoder_dir), dtype="int8"), tiny_encoder_dir) is None


def test_retriever_uses_the_export_once_made(cache, tmp_path, tiny_encoder_dir, monkeypatch):
    from unirag.models.encoder import Encoder
    from unirag.models.onnx_encoder import OnnxEncoder
    from unirag.retrieval import build_index
    from unirag.retrieval.dense import DenseRetriever

    monkeypatch.setenv("UNIRAG_ONNX", "0")  # a torch build: no export yet
    ix = build_index([Passage(id=p["id"], title=p["title"], text=p["text"]) for p in PASSAGES], tmp_path / "ix", encoder=str(tiny_encoder_dir),
                     bm25=False, progress=False)
    monkeypatch.setenv("UNIRAG_ONNX", "1")
    first = DenseRetriever.load(ix)  # torch; exports for the next process
    assert isinstance(first._queries or first.encoder, Encoder)
    second = DenseRetriever.load(ix)
    assert isinstance(second._queries, OnnxEncoder)
    a, b = first.search(QUERIES, 3), second.search(QUERIES, 3)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert isinstance(second.encoder, Encoder)  # loaded on first use, for embedding passages
    assert second.search(QUERIES, 3).ids == a.ids and second.query_encoder is second._queries  # still ONNX
    assert second._queries.token_counts(["who wrote it"]) == [len(second.encoder.tokenizer("who wrote it")["input_ids"])]
    monkeypatch.setenv("UNIRAG_ONNX", "0")
    assert DenseRetriever.load(ix)._queries is None

    code = ("import sys; from unirag.retrieval.dense import DenseRetriever; "
            f"r = DenseRetriever.load({str(ix)!r}); h = r.search([{QUERIES[0]!r}], 3); "
            "print(json.dumps({'ids': h.ids[0], 'torch': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         env={**__import__("os").environ, "UNIRAG_ONNX": "1"}, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"ids": a.ids[0], "torch": False}


def test_corpus_on_onnx_runtime_equals_torch(cache, tmp_path, tiny_encoder_dir, monkeypatch):
    """An index built on ONNX Runtime (the default where it is installed) holds the torch build's
    vectors to float32 rounding, in the same rows, with the same manifest encoder; the ONNX path
    batches and reports progress as the torch one does."""
    from unirag.index.vector import Index
    from unirag.models.encoder import Encoder
    from unirag.models.onnx_encoder import OnnxEncoder, corpus_encoder
    from unirag.progress import Progress
    from unirag.retrieval import build_index

    many = [Passage(id=f"{p['id']}-{i}", title=p["title"], text=p["text"] + " more" * (i * 7 % 40))
            for i in range(8) for p in PASSAGES]
    enc = corpus_encoder(str(tiny_encoder_dir), batch_tokens=64)
    assert isinstance(enc, OnnxEncoder) and enc.batch_tokens == 64
    built = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("UNIRAG_ONNX", flag)
        built[flag] = Index.load(build_index(many, tmp_path / f"ix{flag}", encoder=str(tiny_encoder_dir), bm25=False,
                                             progress=False, batch_size=5, batch_tokens=64))
    a, b = built["1"], built["0"]
    assert a.manifest.encoder == b.manifest.encoder and a.manifest.encoder_info == b.manifest.encoder_info
    va, vb = a.reconstruct(np.arange(len(many))), b.reconstruct(np.arange(len(many)))
    np.testing.assert_allclose(va, vb, atol=1e-5)
    assert not np.allclose(va[0], va[1], atol=1e-3)

    texts = [p.contents for p in many]
    bar = Progress(len(texts), "embedding", display="none")
    enc.threads = 2
    got = enc.encode(texts, batch_size=5, bar=bar, threads=1)
    np.testing.assert_allclose(got, va, atol=1e-5)
    assert bar.done == len(texts) and bar.work_done == sum(enc.token_counts(texts)) == bar.work_expected
    assert enc.threads == 2 and 1 in enc._sessions  # the call ran on a session of 1 thread; the setting stays
    torch_enc = Encoder.from_pretrained(str(tiny_encoder_dir))
    assert enc.token_counts(texts) == torch_enc.token_counts(texts)
    enc.threads = 2  # a build's threads hold for the build only
    build_index(many[:4], tmp_path / "ix-t1", encoder=enc, bm25=False, progress=False, threads=1)
    assert enc.threads == 2
    monkeypatch.setenv("UNIRAG_ONNX", "0")
    assert isinstance(corpus_encoder(str(tiny_encoder_dir)), Encoder)


def test_document_updates_embed_on_onnx_runtime(cache, tmp_path, tiny_encoder_dir, monkeypatch):
    """Adding passages or files to a float32 index embeds them on ONNX Runtime without loading the
    torch encoder: the same vectors to float32 rounding, and files cut into the same passages (the
    ONNX encoder's tokenizer counts tokens as the transformers one does)."""
    from unirag.index.vector import Index
    from unirag.models import encoder as encoder_mod
    from unirag.retrieval import build_index, update_index
    from unirag.retrieval.dense import DenseRetriever
    from unirag.retrieval.ingest import add_files

    torch_enc = encoder_mod.Encoder.from_pretrained(str(tiny_encoder_dir))
    ix = build_index([Passage(id=p["id"], title=p["title"], text=p["text"]) for p in PASSAGES[:3]], tmp_path / "ix",
                     encoder=str(tiny_encoder_dir), bm25=False, progress=False)
    docs = tmp_path / "docs"
    docs.mkdir()
    long = " ".join(f"{p['text']} Unusual-words like photosynthetic, Nile's and 1,234.5 appear." for p in PASSAGES * 6)
    (docs / "a.txt").write_text(long)
    (docs / "b.md").write_text("# Notes\n\n" + long[::-1])

    def no_torch(*a, **k):
        raise AssertionError("the torch encoder was loaded")

    new = [Passage(id=p["id"] + "-new", title=p["title"], text=p["text"] + " again") for p in PASSAGES[3:]]
    with monkeypatch.context() as m:
        m.setattr(encoder_mod.Encoder, "from_pretrained", no_torch)
        assert update_index(ix, add=new).added == len(new)
        got = DenseRetriever.load(ix)
        assert got.corpus_encoder is got._queries is not None  # what the engines hand to updates
        hits = got.search([p.contents for p in new], 1)
        onnx_files = add_files(tmp_path / "files-onnx", docs, encoder=str(tiny_encoder_dir), max_tokens=40)
    assert [h[0] for h in hits.ids] == [p.id for p in new]
    want = torch_enc.encode([p.contents for p in new], sort_by_length=False)
    stored = Index.load(ix).reconstruct(np.arange(3, 3 + len(new)))  # appended rows, in order
    np.testing.assert_allclose(stored, want, atol=1e-5)

    monkeypatch.setenv("UNIRAG_ONNX", "0")
    torch_files = add_files(tmp_path / "files-torch", docs, encoder=str(tiny_encoder_dir), max_tokens=40)
    assert onnx_files.update.added == torch_files.update.added > 4
    texts = {f: [p.text for p in DenseRetriever.load(tmp_path / f).store] for f in ("files-onnx", "files-torch")}
    assert texts["files-onnx"] == texts["files-torch"]


def test_auto_runtime_is_measured_once_per_cpu_and_threads(cache, tiny_encoder_dir, monkeypatch):
    """``$UNIRAG_ONNX=auto`` (the default) embeds corpora on the runtime a timing race picked; the
    choice is recorded beside the export per CPU model and thread count and read back without racing
    again; a damaged record is measured again; ``0`` and ``1`` override it."""
    from unirag.models import onnx_encoder as ox
    from unirag.models.encoder import Encoder
    from unirag.models.registry import cpu_model

    monkeypatch.setenv("UNIRAG_ONNX", "auto")
    races = []
    real = ox.faster_runtime

    def counted(*a, **k):
        races.append(a[3])
        return real(*a, **k)

    monkeypatch.setattr(ox, "faster_runtime", counted)
    first = ox.corpus_encoder(str(tiny_encoder_dir), threads=1)
    record = ox.export_dir(tiny_encoder_dir) / "runtime.json"
    seen = json.loads(record.read_text())[f"{cpu_model()}|1"]
    assert seen["runtime"] in ox.RUNTIMES and {"onnx", "torch"} <= set(seen["seconds"]) <= set(ox.RUNTIMES)
    assert isinstance(first, ox.OnnxEncoder if seen["runtime"] == "onnx" else Encoder)
    for choice, kind in (("torch", Encoder), ("onnx", ox.OnnxEncoder), ("torch-bf16", Encoder)):  # no new race
        record.write_text(json.dumps({f"{cpu_model()}|1": {"runtime": choice}}))
        monkeypatch.setattr(ox, "faster_runtime", real)
        monkeypatch.setattr(ox.OnnxEncoder, "encode", lambda *a, **k: pytest.fail("raced again"))
        got = ox.corpus_encoder(str(tiny_encoder_dir), threads=1)
        assert isinstance(got, kind)
        assert getattr(got, "compute", None) == {"torch": "float32", "torch-bf16": "bfloat16"}.get(choice)
        monkeypatch.undo()
        monkeypatch.setenv("UNIRAG_CACHE", str(cache))
        monkeypatch.setenv("UNIRAG_ONNX", "auto")
    record.write_text("{not json")
    monkeypatch.setattr(ox, "faster_runtime", counted)
    ox.corpus_encoder(str(tiny_encoder_dir), threads=1)
    ox.corpus_encoder(str(tiny_encoder_dir), threads=2)  # another thread count: its own race
    assert races == [1, 1, 2]
    assert set(json.loads(record.read_text())) == {f"{cpu_model()}|1", f"{cpu_model()}|2"}
    for flag, kind in (("0", Encoder), ("1", ox.OnnxEncoder)):
        monkeypatch.setenv("UNIRAG_ONNX", flag)
        assert isinstance(ox.corpus_encoder(str(tiny_encoder_dir), threads=1), kind)
    assert races == [1, 1, 2]


def test_cpu_model_names_the_vector_extensions(tmp_path):
    from unirag.models.registry import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9R14\n")
    assert cpu_model(str(info)) == "AMD EPYC 9R14 avx2 avx512 bf16"


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_races_only_where_the_cpu_multiplies_it(cache, tiny_encoder_dir, monkeypatch, native):
    from unirag.models import onnx_encoder as ox
    from unirag.models import registry

    monkeypatch.setattr(registry, "cpu_has_bf16", lambda *a: native)
    monkeypatch.setenv("UNIRAG_ONNX", "auto")
    enc = ox.corpus_encoder(str(tiny_encoder_dir), threads=1)
    seen = next(iter(json.loads((ox.export_dir(tiny_encoder_dir) / "runtime.json").read_text()).values()))
    assert set(seen["seconds"]) == ({"onnx", "torch", "torch-bf16"} if native else {"onnx", "torch"})
    assert seen["runtime"] == min(seen["seconds"], key=seen["seconds"].get)
    assert getattr(enc, "compute", "float32") == ("bfloat16" if seen["runtime"] == "torch-bf16" else "float32")


def test_bfloat16_compute_is_autocast_with_float32_vectors(tiny_encoder_dir):
    """``compute="bfloat16"`` changes the products, not the output: float32 unit vectors close to
    the float32 ones (bfloat16 keeps 8 bits of mantissa), and the manifest records it."""
    from unirag.models.encoder import Encoder

    enc = Encoder.from_pretrained(str(tiny_encoder_dir))
    texts = [p["text"] for p in PASSAGES]
    want = enc.encode(texts)
    got = enc.encode(texts, compute="bfloat16")
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    cos = (got * want).sum(1)
    assert cos.min() > 0.99 and not np.array_equal(got, want)
    assert "compute" not in enc.info()
    enc.compute = "bfloat16"
    np.testing.assert_array_equal(enc.encode(texts), got)
    assert enc.info()["compute"] == "bfloat16"
