"""The CLI end to end on a small corpus and a tiny encoder, errors included."""

import json
import subprocess
import sys

import pytest


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "unirag.cli.app", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_encoder_dir):
    import json as _json

    from tests.conftest import PASSAGES

    tmp = tmp_path_factory.mktemp("cli")
    corpus = tmp / "c.jsonl"
    corpus.write_text("".join(_json.dumps(p) + "\n" for p in PASSAGES))
    out = tmp / "ix"
    proc = run("index", "build", corpus, "--out", out, "--encoder", tiny_encoder_dir, "--json")
    return tmp, corpus, out, json.loads(proc.stdout)


def test_build_search_json(built):
    tmp, corpus, out, manifest = built
    assert manifest["corpus_count"] == 6 and manifest["dim"] == 32 and manifest["extra"]["kinds"] == ["dense", "bm25"]
    hits = json.loads(run("search", "Leonardo da Vinci tower", "-k", "2", "--index", out, "--retriever", "bm25", "--json").stdout)["hits"]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["id"] == "p1" and hits[0]["title"] == "Mona Lisa"
    table = run("search", "Leonardo da Vinci", "-k", "2", "--index", out, "--retriever", "bm25").stdout
    assert "Mona Lisa" in table and "rank" in table
    info = json.loads(run("index", "info", out, "--json").stdout)
    assert info["verified"] is True and "index.faiss" in info["files"]


def test_malformed_corpus_leaves_existing_index_untouched(built, tiny_encoder_dir):
    tmp, corpus, out, _ = built
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp / "bad.jsonl"
    bad.write_text(corpus.read_text() + '{"id": "x", "text": "unterminated\n')
    proc = run("index", "build", bad, "--out", out, "--encoder", tiny_encoder_dir, check=False)
    assert proc.returncode == 2
    assert "bad.jsonl:7: invalid JSON" in proc.stderr and "Traceback" not in proc.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    # no temporary folder is left; only the writers' (empty, persistent) lock file sits beside the index
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == [f".{out.name}.lock"]
    assert (tmp / f".{out.name}.lock").stat().st_size == 0


def test_one_line_errors(built, tmp_path, tiny_encoder_dir, tiny_encoder_dir_b):
    tmp, corpus, out, _ = built
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [
        (["index", "build", empty, "--out", tmp_path / "e", "--encoder", tiny_encoder_dir], "corpus is empty"),
        (["index", "build", corpus, "--out", tmp_path / "f", "--encoder", tiny_encoder_dir, "--factory", "Nope3"], "unknown or invalid FAISS factory string 'Nope3'"),
        (["index", "build", corpus, "--out", tmp_path / "g", "--encoder", tmp_path / "no-such-model"], "no such model folder"),
        (["search", "q", "--index", out, "--encoder", tiny_encoder_dir_b], "48-dimensional"),
        (["search", "q", "--index", tmp_path / "nothing"], "no such index folder"),
    ]
    for args, message in cases:
        proc = run(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (message, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len([ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("Loading", "embedding"))]) <= 3


def test_corrupted_index_detected(built, tmp_path):
    import shutil

    _, _, out, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    f = copy / "docs" / "docs.jsonl"
    f.write_bytes(f.read_bytes()[:-10])
    proc = run("search", "q", "--index", copy, check=False)
    assert proc.returncode == 2 and "docs/docs.jsonl: checksum mismatch" in proc.stderr


def test_eval_retrieval_cli(built, tmp_path):
    _, _, out, _ = built
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "a", "question": "Leonardo da Vinci portrait", "gold": ["p1"]}\n'
                       '{"id": "b", "question": "German composer pianist", "gold": ["p5"]}\n')
    res = json.loads(run("eval", "retrieval", "--queries", queries, "--index", out, "--retriever", "bm25",
                         "--ks", "1,3", "--out", tmp_path / "r.json", "--json").stdout)
    assert res["results"]["bm25"]["recall@1"] == 1.0 and res["results"]["bm25"]["n_queries"] == 2
    assert json.loads((tmp_path / "r.json").read_text()) == res
    queries.write_text('{"id": "a", "question": "x"}\n')
    proc = run("eval", "retrieval", "--queries", queries, "--index", out, check=False)
    assert proc.returncode == 2 and "q.jsonl:1: field 'gold'" in proc.stderr


def test_help_explains():
    text = run("--help").stdout
    for cmd in ("search", "ask", "index", "eval", "train"):
        assert cmd in text
    assert "FAISS factory string" in run("index", "build", "--help").stdout
