"""The RAG commands are registered and explain themselves."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner


@pytest.mark.parametrize("args,words", [
    (["train", "rag", "--help"], ["--config", "resume", "collapse"]),
    (["train", "retriever", "--help"], ["--config", "BM25", "hard"]),
    (["rag", "ask", "--help"], ["question", "--index"]),
    (["rag", "swap-demo", "--help"], ["index"]),
])
def test_help(args, words):
    import unirag.cli.rag  # noqa: F401  (registers the commands)
    from unirag.cli.groups import app

    res = CliRunner().invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for w in words:
        assert w in text


def test_bad_config_is_reported(tmp_path):
    import unirag.cli.rag  # noqa: F401
    from unirag.cli.groups import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: x\nmax_stepz: 3\n")
    res = CliRunner().invoke(app, ["train", "rag", "--config", str(bad)])
    assert res.exit_code != 0
    assert "max_stepz" in str(res.exception)
