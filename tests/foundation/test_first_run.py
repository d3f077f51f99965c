"""First-run building blocks: the threads setting of an index build, the int8 encoder path recorded in
the manifest (queries embedded by the same path), and the progress display / callback."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.conftest import PASSAGES
from unirag.corpus.passage import Passage


def _passages():
    return [Passage(id=p["id"], title=p["title"], text=p["text"]) for p in PASSAGES]


def _spy_threads(monkeypatch, seen: list) -> None:
    """Record the threads each corpus embedding call runs on: torch's for the torch encoder, the
    session's for the ONNX Runtime one."""
    import torch

    from unirag.models.encoder import Encoder
    from unirag.models.onnx_encoder import OnnxEncoder

    for cls, threads in ((Encoder, lambda self: torch.get_num_threads()), (OnnxEncoder, lambda self: self.threads)):
        def spy(self, *a, _orig=cls.encode, _threads=threads, **kw):
            seen.append((type(self).__name__, _threads(self)))
            return _orig(self, *a, **kw)

        monkeypatch.setattr(cls, "encode", spy)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_threads_setting_honoured_and_restored(tmp_path, tiny_encoder_dir, monkeypatch, runtime):
    import torch

    from unirag.retrieval import build_index

    monkeypatch.setenv("UNIRAG_ONNX", "1" if runtime == "onnx" else "0")
    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    kind = "OnnxEncoder" if runtime == "onnx" else "Encoder"
    seen = []
    _spy_threads(monkeypatch, seen)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    build_index(_passages(), tmp_path / "ix", encoder=str(tiny_encoder_dir), bm25=False, progress=False, threads=want)
    assert seen == [(kind, want)]
    assert torch.get_num_threads() == before
    # HNSW builds hold FAISS (one OpenMP runtime with torch) to one thread while adding, not while embedding
    seen.clear()
    build_index(_passages(), tmp_path / "hnsw", encoder=str(tiny_encoder_dir), factory="HNSW8", bm25=False,
                progress=False, threads=want)
    assert seen == [(kind, want)] and torch.get_num_threads() == before


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_threads_default_is_every_available_core(tmp_path, tiny_encoder_dir, monkeypatch, runtime):
    from unirag.models.encoder import cores_available
    from unirag.retrieval import BuildConfig, build_index

    monkeypatch.setenv("UNIRAG_ONNX", "1" if runtime == "onnx" else "0")
    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    seen = []
    _spy_threads(monkeypatch, seen)
    monkeypatch.delenv("UNIRAG_THREADS", raising=False)
    build_index(_passages(), tmp_path / "ix", encoder=str(tiny_encoder_dir), bm25=False, progress=False)
    build_index(_passages(), tmp_path / "ix2", encoder=str(tiny_encoder_dir), bm25=False, progress=False,
                config=BuildConfig(threads=1))
    monkeypatch.setenv("UNIRAG_THREADS", "1")   # jobs side by side: every build without a count takes it
    build_index(_passages(), tmp_path / "ix3", encoder=str(tiny_encoder_dir), bm25=False, progress=False)
    assert [t for _, t in seen] == [cores_available(), 1, 1]
    assert {k for k, _ in seen} == {"OnnxEncoder" if runtime == "onnx" else "Encoder"}
    with pytest.raises(Exception, match="threads"):
        BuildConfig(threads=-1).validate()
    with pytest.raises(Exception, match="encoder_dtype"):
        BuildConfig(encoder_dtype="fp8").validate()


def test_int8_recorded_in_manifest_and_queries_take_the_same_path(tmp_path, tiny_encoder_dir):
    from unirag.index.folder import IndexFolder
    from unirag.retrieval import build_index
    from unirag.retrieval.dense import DenseRetriever

    enc = str(tiny_encoder_dir)
    fp = build_index(_passages(), tmp_path / "fp32", encoder=enc, bm25=False, progress=False)
    q8 = build_index(_passages(), tmp_path / "int8", encoder=enc, bm25=False, progress=False, encoder_dtype="int8")
    m8, m32 = IndexFolder(q8).read_manifest(), IndexFolder(fp).read_manifest()
    assert m8.encoder == enc + "+int8" and m8.encoder_info["dtype"] == "int8"
    assert m32.encoder == enc and m32.encoder_info["dtype"] == "float32"

    r8, r32 = DenseRetriever.load(q8), DenseRetriever.load(fp)
    assert r8.encoder.dtype == "int8" and r32.encoder.dtype == "float32"
    rows = np.arange(len(PASSAGES))[:, None]
    v8, v32 = r8.index.reconstruct(rows)[:, 0], r32.index.reconstruct(rows)[:, 0]
    diff = np.abs(v8 - v32).max()
    assert diff > 2e-5  # the int8 path gives other vectors (a tiny random model: close ones)
    texts = [p.contents for p in _passages()]
    # queries of the int8 index come from the int8 path: the passages' texts, embedded as one batch as
    # at build time (int8 activations are scaled per batch), give their stored vectors
    assert np.abs(r8.embed_queries(texts) - v8).max() < diff / 20
    assert np.abs(r32.embed_queries(texts) - v32).max() < diff / 20
    for i, p in enumerate(_passages()):
        assert r8.search([p.contents], k=1).ids[0][0] == p.id
    # the fp32 encoder is refused on the int8 index (named, with the fix)
    from unirag.index.errors import IndexMismatchError

    with pytest.raises(IndexMismatchError, match=r"\+int8"):
        DenseRetriever.load(q8, encoder=enc)


def test_progress_callback_and_plain_lines(tmp_path, tiny_encoder_dir):
    from unirag.progress import Progress
    from unirag.retrieval import build_index

    calls = []
    many = [Passage(id=f"{p.id}-{i}", title=p.title, text=p.text) for i in range(5) for p in _passages()]
    build_index(many, tmp_path / "ix", encoder=str(tiny_encoder_dir), bm25=False, progress=False,
                batch_size=4, on_progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (30, 30) and all(t == 30 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 8  # ceil(30 / 4) batches

    now = [0.0]
    buf = io.StringIO()  # not a terminal: plain lines, at most every `every_s` seconds, and at the end
    p = Progress(100, "embedding corpus", display="auto", stream=buf, every_s=10, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 2.0
        p.update(10)
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "embedding corpus: 50/100 passages (50%), 5.0 passages/s, 10s left"
    assert lines[-1] == "embedding corpus: 100/100 passages (100%), 5.0 passages/s, took 20s"
    assert len(lines) == 2


def test_time_left_follows_work_and_recent_rate():
    """Longest passages first: texts get cheaper as the run goes on, so an estimate by texts/s is
    far too long at first; by tokens it is right. A rate that doubles half-way (a second thread freed)
    shows in the estimate within the window."""
    from unirag.progress import Progress

    now = [0.0]
    costs = [100 - i for i in range(100)]  # 100 texts, 100 tokens down to 1; 10 tokens/s throughout
    p = Progress(100, "embedding corpus", display="none", clock=lambda: now[0], window_s=30)
    p.expect(100, sum(costs))
    for c in costs[:20]:
        now[0] += c / 10
        p.update(1, work=c)
    left = sum(costs[20:]) / 10
    assert p.eta_s() == pytest.approx(left, rel=1e-6)
    assert (100 - 20) / (20 / now[0]) > 2 * left  # what texts/s alone would say

    now[0] = 0.0  # a rate that doubles at t=60: after 30 s more the estimate uses the new rate only
    q = Progress(10_000, "embedding corpus", display="none", clock=lambda: now[0], window_s=30)
    q.expect(5_000, 5_000.0)  # half announced, at 1 token each; the rest assumed alike
    for t in range(1, 91):
        now[0] = float(t)
        q.update(10 if t <= 60 else 20, work=10 if t <= 60 else 20)
    assert q.eta_s() == pytest.approx((10_000 - q.done) / 20, rel=1e-6)


def test_cli_build_threads_int8(tmp_path, tiny_encoder_dir):
    from tests.foundation.test_cli import run

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    m = json.loads(run("index", "build", corpus, "--out", tmp_path / "ix", "--encoder", tiny_encoder_dir,
                       "--int8", "--threads", "1", "--no-bm25", "--json").stdout)
    assert m["encoder"].endswith("+int8") and m["encoder_info"]["dtype"] == "int8"
    hits = json.loads(run("search", PASSAGES[0]["text"], "-k", "1", "--index", tmp_path / "ix", "--json").stdout)["hits"]
    assert hits[0]["id"] == PASSAGES[0]["id"]
    bad = run("index", "build", corpus, "--out", tmp_path / "ix2", "--threads", "-1", check=False)
    assert bad.returncode == 2 and "--threads" in bad.stderr


def test_token_budget_cuts_batches_and_keeps_vectors(tiny_encoder_dir):
    from unirag.models.encoder import Encoder, token_batches

    assert token_batches([300, 100, 100, 50, 50, 50, 10], batch_size=64, budget=250) == [(0, 1), (1, 3), (3, 7)]
    assert token_batches([30] * 10, batch_size=4, budget=0) == [(0, 4), (4, 8), (8, 10)]
    assert token_batches([30] * 10, batch_size=4, budget=10_000) == [(0, 4), (4, 8), (8, 10)]

    enc = Encoder.from_pretrained(str(tiny_encoder_dir), batch_tokens=64)
    texts = [" ".join(["word"] * n) + f" end {n}" for n in (3, 40, 7, 25, 1, 60, 12, 12)]
    shapes = []
    orig = enc._forward

    def spy(batch):
        shapes.append(tuple(batch["input_ids"].shape))
        return orig(batch)

    enc._forward = spy
    got = enc.encode(texts, batch_size=16)
    assert all(b * t <= 64 or b == 1 for b, t in shapes) and len(shapes) > 2
    assert sum(b for b, _ in shapes) == len(texts)
    assert [t for _, t in shapes] == sorted((t for _, t in shapes), reverse=True)  # longest first
    one_by_one = np.stack([enc.embed([t]).detach().numpy()[0] for t in texts])
    np.testing.assert_allclose(got, one_by_one, atol=1e-5)  # padding only, within float32 rounding
    shapes.clear()
    enc.encode(texts, batch_size=16, batch_tokens=0)
    assert shapes and shapes[0][0] == len(texts)  # no budget: one batch of batch_size texts


def test_batch_tokens_option_and_config(tmp_path, tiny_encoder_dir):
    from tests.foundation.test_cli import run
    from unirag.retrieval.build import BuildConfig
    from unirag.config.base import ConfigError

    assert BuildConfig().batch_tokens == 2048
    with pytest.raises(ConfigError, match="batch_tokens"):
        BuildConfig(batch_tokens=-1).validate()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    bad = run("index", "build", corpus, "--out", tmp_path / "ix", "--batch-tokens", "-5", check=False)
    assert bad.returncode == 2 and "--batch-tokens" in bad.stderr
    ok = json.loads(run("index", "build", corpus, "--out", tmp_path / "ix", "--encoder", tiny_encoder_dir,
                        "--batch-tokens", "64", "--no-bm25", "--json").stdout)
    assert ok["count"] == len(PASSAGES)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_first_index_build_gives_a_core_to_the_generator_conversion(tmp_path, tiny_encoder_dir, monkeypatch, runtime):
    import torch

    import unirag.data.wiki as wiki
    import unirag.retrieval.build as build
    from unirag.models.encoder import Encoder
    from unirag.models.onnx_encoder import OnnxEncoder

    monkeypatch.setenv("UNIRAG_ONNX", "1" if runtime == "onnx" else "0")
    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UNIRAG_THREADS", "2")
    many = [Passage(id=f"p{i}", title=f"T{i}", text=" ".join(["word"] * (5 + i % 7))) for i in range(40)]
    monkeypatch.setattr(wiki, "wiki_passages", lambda: iter(many))

    class Child:  # a conversion that ends after the third batch
        polls = 0

        def poll(self):
            Child.polls += 1
            return None if Child.polls <= 3 else 0

        def wait(self):
            return 0

    started = []
    monkeypatch.setattr(build, "_convert_in_background", lambda name, progress: started.append(name) or Child())
    seen = []
    if runtime == "torch":
        orig = Encoder._forward

        def spy(self, batch):
            seen.append(torch.get_num_threads())
            return orig(self, batch)

        monkeypatch.setattr(Encoder, "_forward", spy)
    else:  # every batch runs on a session of the encoder's threads at that moment
        orig_run = OnnxEncoder._run

        def spy_run(self, encs, threads=None):
            seen.append(threads or self.threads)
            return orig_run(self, encs, threads)

        monkeypatch.setattr(OnnxEncoder, "_run", spy_run)
    monkeypatch.setattr(build, "DEFAULT_BATCH_TOKENS", 40)  # several batches of a few passages
    before = torch.get_num_threads()
    path = build.ensure_default_index(encoder=str(tiny_encoder_dir), progress=False, convert="qwen")
    assert started == ["qwen"] and (path / "manifest.json").is_file()
    assert seen[:4] == [1, 1, 1, 1] and seen[4:] and set(seen[4:]) == {2}  # one core given up while converting
    assert torch.get_num_threads() == before
    started.clear()
    build.ensure_default_index(encoder=str(tiny_encoder_dir), progress=False, convert="qwen")
    assert started == []  # built already: nothing converts here


def test_needs_conversion_only_for_packaged_models_not_cached(tmp_path, monkeypatch):
    from unirag.models.registry import needs_conversion

    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "cache"))
    assert needs_conversion("qwen2.5-coder-0.5b-instruct") and needs_conversion("smollm2-135m-instruct")
    assert not needs_conversion("all-minilm-l6-v2") and not needs_conversion(str(tmp_path))
    (tmp_path / "cache" / "models" / "qwen2.5-coder-0.5b-instruct").mkdir(parents=True)
    (tmp_path / "cache" / "models" / "qwen2.5-coder-0.5b-instruct" / "config.json").write_text("{}")
    assert not needs_conversion("qwen2.5-coder-0.5b-instruct")
