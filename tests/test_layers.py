"""Import layers of ``unirag`` (docs/api-map.md, "Import rules"), checked on the source with ``ast``.

* Every import counts, also those inside functions: a lazy import is still a dependency.
* Each module belongs to its top-level sub-package (``unirag.retrieval.dense`` -> ``retrieval``; a
  top-level module such as ``unirag/sampling_params.py`` is its own layer) and may import only the
  layers that ``ALLOWED`` lists for it (its own layer always).
* No import cycle between modules among the imports executed at import time (module level, class
  bodies, ``if``/``try`` blocks; not function bodies, not ``if TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "unirag"

# Bottom to top.  ``engine`` is the engine protocol and the helpers the three engines share to build
# answers; each engine package (pipeline, rag, onegen) implements the door's verbs.
_BASE = {"config", "corpus", "data", "index", "models", "retrieval", "distributed", "sampling_params", "outputs",
         "engine", "progress"}
_APPS = _BASE | {"pipeline", "rag", "onegen"}
ALLOWED: dict[str, set[str]] = {
    ROOT: set(),                                    # `import unirag` stays light: it imports nothing
    "config": set(),
    "progress": set(),                              # progress display: imports nothing of unirag's
    "sampling_params": {"config", "corpus"},
    "outputs": {"config", "corpus"},
    "corpus": {"config"},
    "data": {"config", "corpus"},
    "index": {"config", "corpus"},
    "models": {"config", "sampling_params", "progress"},
    "retrieval": {"config", "corpus", "data", "index", "models", "progress",  # data: the default corpus's index
                  "distributed"},                  # build_index(ray=...), sharded folders behind load_retriever
    "distributed": {"config", "corpus", "data", "index", "models", "retrieval", "progress"},  # Ray: beside retrieval
    "engine": {"config", "corpus", "sampling_params", "outputs"},
    "pipeline": _BASE,
    "rag": _BASE,                                   # rag and onegen: not each other, not pipeline
    "onegen": _BASE,
    "api": _APPS,                                   # the door: RAG over the three engines
    "train": _APPS | {"eval"},                      # eval: its metric modules only (EVAL_METRICS)
    "eval": _APPS | {"api"},
    "cli": None,                                    # None: everything
    "serve": None,
}
EVAL_METRICS = {"unirag.eval.qa", "unirag.eval.retrieval"}   # what train may take from eval

# Edges (importer layer, imported layer) that break the layering in today's tree.  The test passes
# with them and fails on any other violation; an entry that is no longer used fails too, so the set
# only shrinks.  To be emptied as the packages are restructured.
KNOWN_TODAY: set[tuple[str, str]] = set()


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


MODULES = _modules()


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _is_package(module: str) -> bool:
    return MODULES[module][0].name == "__init__.py" if module in MODULES else False


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The unirag modules an import statement loads (``from pkg import sub`` loads ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = _resolve(module, node)
        names = [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return [n for n in names if n == ROOT or n.startswith(ROOT + ".")]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, tree: ast.Module, import_time: bool) -> list[tuple[str, int]]:
    """``(target, line)`` of the imports anywhere in the module, or only of those run at import time."""
    found: list[tuple[str, int]] = []

    def visit(stmts):
        for node in stmts:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.extend((t, node.lineno) for t in _targets(module, node))
            elif import_time and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif import_time and isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
            elif import_time:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []))
                for case in getattr(node, "cases", []):
                    visit(case.body)
            else:
                for child in ast.walk(node):
                    if isinstance(child, (ast.Import, ast.ImportFrom)):
                        found.extend((t, child.lineno) for t in _targets(module, child))

    visit(tree.body)
    return found


def _allowed(src: str, dst_module: str) -> bool:
    a, b = layer(src), layer(dst_module)
    if a == b:
        return True
    ok = ALLOWED.get(a, set())
    if ok is None:
        return True
    if a == "train" and b == "eval":
        return dst_module in EVAL_METRICS
    return b in ok


def layer_violations() -> dict[tuple[str, str], list[str]]:
    """``{(importer layer, imported layer): ["module:line -> target", ...]}`` for every disallowed import."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, (path, tree) in MODULES.items():
        for target, line in _imports(module, tree, import_time=False):
            if not _allowed(module, target):
                out[(layer(module), layer(target))].append(
                    f"{path.relative_to(SRC.parent)}:{line}: {module} imports {target}")
    return dict(out)


def import_time_graph() -> dict[str, set[str]]:
    """Module -> modules it loads at import time (a submodule import also runs the packages above it,
    except the importer's own ancestors, which are already loading)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, (_, tree) in MODULES.items():
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        for target, _ in _imports(module, tree, import_time=True):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in MODULES and dep != module and dep not in own:
                    graph[module].add(dep)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (``a -> b -> ... -> a``) per back edge found by a depth-first search."""
    state: dict[str, int] = {}                      # 1: on the stack, 2: done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return cycles


def test_every_layer_is_in_the_table():
    unknown = sorted({layer(m) for m in MODULES} - set(ALLOWED))
    assert not unknown, f"sub-packages missing from ALLOWED in tests/test_layers.py: {unknown}"
    for name, deps in ALLOWED.items():
        assert deps is None or deps <= set(ALLOWED), (name, deps - set(ALLOWED))


def test_rag_onegen_pipeline_are_independent():
    for a in ("rag", "onegen", "pipeline"):
        assert not ({"rag", "onegen", "pipeline"} - {a}) & ALLOWED[a]


def test_imports_follow_the_layers():
    found = layer_violations()
    new = {edge: sites for edge, sites in found.items() if edge not in KNOWN_TODAY}
    report = "\n".join(f"{a} -> {b} (allowed for {a}: {sorted(ALLOWED.get(a) or [])}):\n    " + "\n    ".join(sites)
                       for (a, b), sites in sorted(new.items()))
    assert not new, "imports that break the layering (docs/api-map.md):\n" + report
    stale = sorted(KNOWN_TODAY - set(found))
    assert not stale, f"KNOWN_TODAY entries no longer used, remove them from tests/test_layers.py: {stale}"


def test_no_import_time_cycles():
    cycles = find_cycles(import_time_graph())
    assert not cycles, "import cycles at import time:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_checks_catch_what_they_should():
    """The checkers on made-up input: a lazy import is seen, a cycle is reported with its path."""
    tree = ast.parse("import os\ndef f():\n    from unirag.eval.qa import score\n"
                     "if TYPE_CHECKING:\n    from unirag.rag import model\n")
    assert _imports("unirag.onegen.x", tree, import_time=False) == [("unirag.eval.qa", 3), ("unirag.rag", 5),
                                                                        ("unirag.rag.model", 5)]
    assert _imports("unirag.onegen.x", tree, import_time=True) == []
    assert not _allowed("unirag.onegen.x", "unirag.eval.qa") and _allowed("unirag.train.x", "unirag.eval.qa")
    assert not _allowed("unirag.train.x", "unirag.eval") and _allowed("unirag.cli.x", "unirag.serve")
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("rel,want", [(("unirag.rag.model", 1, "scoring"), "unirag.rag.scoring"),
                                      (("unirag.rag", 1, "model"), "unirag.rag.model"),
                                      (("unirag.rag.model", 2, "corpus"), "unirag.corpus")])
def test_relative_imports_resolve(rel, want):
    module, level, name = rel
    assert _resolve(module, ast.ImportFrom(module=name, names=[], level=level)) == want
