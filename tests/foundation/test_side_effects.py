"""Importing unirag touches nothing on disk; model loading leaves transformers' logging as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
IMPORTS = "import unirag, unirag.onegen, unirag.retrieval, unirag.rag, unirag.cli.app"


def _import_with(env_updates: dict[str, str], drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_updates, PYTHONPATH=f"{SRC}{os.pathsep}{env.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-c", IMPORTS], env=env, capture_output=True, text=True, timeout=120)


def test_import_creates_nothing_with_a_missing_home_and_cache(tmp_path):
    home, cache = tmp_path / "no-home", tmp_path / "no-home" / "cache"
    proc = _import_with({"HOME": str(home), "UNIRAG_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert not home.exists()


def test_import_creates_nothing_in_a_read_only_home(tmp_path):
    home = tmp_path / "ro-home"
    home.mkdir()
    home.chmod(0o555)
    try:
        proc = _import_with({"HOME": str(home)}, drop=("UNIRAG_CACHE",))
        assert proc.returncode == 0, proc.stderr
        assert list(home.iterdir()) == []  # (root ignores the mode bits: this checks no write was tried)
    finally:
        home.chmod(0o755)


def test_onegen_default_dir_is_computed_on_call(monkeypatch, tmp_path):
    import unirag.onegen as onegen

    assert not hasattr(onegen, "DEFAULT_ONEGEN_DIR")
    monkeypatch.setenv("UNIRAG_CACHE", str(tmp_path / "c"))
    assert onegen.default_onegen_dir() == tmp_path / "c" / "onegen" / "smollm2-onegen"
    assert not (tmp_path / "c").exists()


def test_quiet_loading_restores_transformers_settings():
    from transformers.utils import logging

    from unirag.models.quiet import quiet_loading

    before_level, before_bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    try:
        logging.set_verbosity_info()
        logging.enable_progress_bar()
        with quiet_loading():
            assert logging.get_verbosity() == logging.ERROR and not logging.is_progress_bar_enabled()
            with quiet_loading():  # nested: the outer block restores
                pass
            assert logging.get_verbosity() == logging.ERROR
        assert logging.get_verbosity() == logging.INFO and logging.is_progress_bar_enabled()
        logging.set_verbosity_warning()
        logging.disable_progress_bar()
        with pytest.raises(RuntimeError), quiet_loading():
            raise RuntimeError("load failed")
        assert logging.get_verbosity() == logging.WARNING and not logging.is_progress_bar_enabled()
    finally:
        logging.set_verbosity(before_level)
        (logging.enable_progress_bar if before_bars else logging.disable_progress_bar)()


def test_encoder_load_leaves_verbosity_unchanged(tiny_encoder_dir):
    from transformers.utils import logging

    from unirag.models.encoder import Encoder

    before_level, before_bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    try:
        logging.set_verbosity_info()
        logging.enable_progress_bar()
        enc = Encoder.from_pretrained(str(tiny_encoder_dir))
        assert enc.dim == 32
        assert logging.get_verbosity() == logging.INFO and logging.is_progress_bar_enabled()
    finally:
        logging.set_verbosity(before_level)
        (logging.enable_progress_bar if before_bars else logging.disable_progress_bar)()
