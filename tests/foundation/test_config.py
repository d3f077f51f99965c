from dataclasses import dataclass, field
from typing import Literal

import pytest

from unirag.config import ConfigBase, ConfigError


@dataclass
class Inner(ConfigBase):
    lr: float = 1e-4
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Outer(ConfigBase):
    model: str
    steps: int = 10
    mode: Literal["sum", "mean"] = "mean"
    inner: Inner = field(default_factory=Inner)
    seed: int | None = None


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    cfg = Outer(model="m", steps=3, mode="sum", inner=Inner(lr=0.5, names=["x", "y"]), seed=7)
    path = cfg.save(tmp_path / f"c{suffix}")
    back = Outer.load(path)
    assert back == cfg
    assert isinstance(back.inner, Inner)


def test_int_accepted_for_float_and_nested_dict(tmp_path):
    cfg = Outer.from_dict({"model": "m", "inner": {"lr": 1}})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)


def test_errors_name_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: m\ninner:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: inner.lr: expected float"):
        Outer.load(path)
    path.write_text("model: m\nstepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['stepz'\]"):
        Outer.load(path)
    path.write_text("model: m\nmode: max\n")
    with pytest.raises(ConfigError, match=r"mode: 'max' is not one of"):
        Outer.load(path)
    with pytest.raises(ConfigError, match="missing"):
        Outer.from_dict({})
