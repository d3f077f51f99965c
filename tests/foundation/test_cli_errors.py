"""CLI error handling: user errors are one line with exit 2 and are caught before any long work;
anything else is a one-line internal error with exit 1 (a traceback with --debug)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import PASSAGES


def cli(capsys, *args: object) -> tuple[int, str, str]:
    """Run ``unirag`` in-process; return (exit code, stdout, stderr)."""
    from unirag.cli.app import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.fixture
def no_long_work(monkeypatch, tmp_path):
    """Record any call that would build the default index, load an encoder or run a retriever."""
    import unirag.eval
    import unirag.retrieval
    from unirag.models.encoder import Encoder

    calls: list[str] = []

    def record(name):
        def fn(*a, **k):
            calls.append(name)
            raise RuntimeError(f"{name} must not run")
        return fn

    monkeypatch.setattr(unirag.retrieval, "ensure_default_index", record("ensure_default_index"))
    monkeypatch.setattr(unirag.retrieval, "load_retriever", record("load_retriever"))
    monkeypatch.setattr(unirag.retrieval, "build_index", record("build_index"))
    monkeypatch.setattr(unirag.eval, "fanoutqa_retrieval_queries", record("fanoutqa_retrieval_queries"))
    monkeypatch.setattr(unirag.eval, "evaluate_retrieval", record("evaluate_retrieval"))
    monkeypatch.setattr(Encoder, "from_pretrained", classmethod(lambda cls, *a, **k: record("encoder")()))
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNIRAG_CACHE", str(cache))
    yield calls
    assert not cache.exists() or not any(cache.iterdir())


def test_user_error_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = cli(capsys, "index", "info", tmp_path / "missing")
    assert code == 2
    assert lines(err) == [f"error: {tmp_path / 'missing'}: no such index folder (build one with `unirag index build`)"]


def test_click_usage_error_is_one_line_exit_2(capsys):
    code, _, err = cli(capsys, "search")
    assert code == 2 and len(lines(err)) == 1
    assert err.startswith("error: Missing argument 'QUERY'") or err.startswith("error: Missing argument 'query'")
    code, _, err = cli(capsys, "search", "q", "-k", "x")
    assert code == 2 and len(lines(err)) == 1 and "'-k'" in err


def test_internal_error_exit_1_and_debug_traceback(capsys, monkeypatch, tmp_path):
    from unirag.index.folder import IndexFolder

    def broken(self):
        raise KeyError("internal-key")

    monkeypatch.setattr(IndexFolder, "read_manifest", broken)
    monkeypatch.delenv("UNIRAG_DEBUG", raising=False)
    code, _, err = cli(capsys, "index", "info", tmp_path)
    assert code == 1
    assert lines(err) == ["internal error: KeyError: 'internal-key'; run with --debug for the traceback"]

    code, _, err = cli(capsys, "--debug", "index", "info", tmp_path)
    assert code == 1 and "Traceback (most recent call last)" in err and "KeyError: 'internal-key'" in err

    monkeypatch.setenv("UNIRAG_DEBUG", "1")
    code, _, err = cli(capsys, "index", "info", tmp_path)
    assert code == 1 and "Traceback (most recent call last)" in err


def test_plain_value_error_is_internal(capsys, monkeypatch, tmp_path):
    from unirag.index.folder import IndexFolder

    def broken(self):
        raise ValueError("some bug")

    monkeypatch.setattr(IndexFolder, "read_manifest", broken)
    monkeypatch.delenv("UNIRAG_DEBUG", raising=False)
    code, _, err = cli(capsys, "index", "info", tmp_path)
    assert code == 1 and lines(err) == ["internal error: ValueError: some bug; run with --debug for the traceback"]


def test_missing_corpus_names_the_path(capsys, tmp_path, no_long_work):
    code, _, err = cli(capsys, "index", "build", tmp_path / "nope.jsonl", "--out", tmp_path / "ix")
    assert code == 2 and lines(err) == [f"error: {tmp_path / 'nope.jsonl'}: no such file or folder"]
    assert no_long_work == [] and not (tmp_path / "ix").exists()


@pytest.mark.parametrize("args, message", [
    (["--retriever", "foo"], "error: --retriever: unknown retriever kind 'foo' (choose from dense, bm25, hybrid)"),
    (["-k", "0"], "error: -k: must be at least 1, got 0"),
    (["-k", "-1"], "error: -k: must be at least 1, got -1"),
])
def test_search_options_checked_before_the_default_index(capsys, no_long_work, args, message):
    code, _, err = cli(capsys, "search", "a question", *args)
    assert code == 2 and lines(err) == [message]
    assert no_long_work == []


@pytest.mark.parametrize("args, option", [
    (["--split-words", "10", "--overlap", "10"], "--overlap: must be smaller than --split-words (10), got 10"),
    (["--split-words", "10", "--overlap", "12"], "--overlap: must be smaller than --split-words (10), got 12"),
    (["--split-words", "-1"], "--split-words: must be at least 0, got -1"),
    (["--split-words", "10", "--overlap", "-2"], "--overlap: must be at least 0, got -2"),
    (["--overlap", "3"], "--overlap: needs --split-words"),
    (["--no-dense", "--no-bm25"], "--no-dense --no-bm25: nothing to build"),
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
])
def test_index_build_options_checked_before_reading(capsys, monkeypatch, tmp_path, no_long_work, args, option):
    import unirag.corpus

    read: list[str] = []
    monkeypatch.setattr(unirag.corpus, "read_corpus", lambda p: read.append(p) or iter(()))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    code, _, err = cli(capsys, "index", "build", corpus, "--out", tmp_path / "ix", *args)
    assert code == 2 and len(lines(err)) == 1 and lines(err)[0].startswith(f"error: {option}"), err
    assert read == [] and no_long_work == [] and not (tmp_path / "ix").exists()


@pytest.mark.parametrize("args, message", [
    (["--retriever", "dense,foo"], "error: --retriever: unknown retriever kind 'foo'"),
    (["--retriever", ","], "error: --retriever: no retriever given"),
    (["--ks", "1,x"], "error: --ks: expected comma-separated positive integers, got '1,x'"),
    (["--ks", "0"], "error: --ks: cut-offs must be at least 1, got 0"),
    (["--ks", "5,-3"], "error: --ks: cut-offs must be at least 1, got -3"),
    (["--split", "dev"], "error: --split: unknown split 'dev' (choose from all, train, heldout)"),
    (["--queries", "/no/such/queries.jsonl"], "error: --queries: /no/such/queries.jsonl: no such file"),
])
def test_eval_retrieval_options_checked_first(capsys, no_long_work, args, message):
    code, _, err = cli(capsys, "eval", "retrieval", *args)
    assert code == 2 and len(lines(err)) == 1 and lines(err)[0].startswith(message), err
    assert no_long_work == []


def test_training_data_readers_name_the_file(tmp_path):
    from unirag.corpus import CorpusError
    from unirag.train.rag import load_qa
    from unirag.train.retriever import load_pairs

    missing = tmp_path / "missing.jsonl"
    for reader in (load_qa, load_pairs):
        with pytest.raises(CorpusError, match=f"{missing}: no such file"):
            reader(str(missing))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "gold": ["p1"], "answers": ["a"]}\n{"question": \n')
    for reader in (load_qa, load_pairs):
        with pytest.raises(CorpusError, match=f"{bad}:2: invalid JSON"):
            reader(str(bad))
    bad.write_text('{"gold": ["p1"]}\n')
    with pytest.raises(CorpusError, match=f"{bad}:1: needs 'question' and 'gold'"):
        load_pairs(str(bad))
