"""The import structure of ``pipeline/`` and ``models/`` (docs/DESIGN.md, "Layout"), read with ``ast``
alone (nothing is imported, so no torch): no import cycle between modules, no Prefect, Dask or typer,
and every layer imports only the layers below it.

Every import counts, at module level or inside a function, absolute or relative. An import names
one module: ``from pipeline.stages import index`` is an edge to ``pipeline.stages.index`` (a
module), ``from pipeline.stages import Catalog`` one to ``pipeline.stages`` (its ``__init__``).
Running a package's ``__init__`` before its submodule is not an edge, so a package may list its own
submodules as long as none of them imports the package back.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "models")
ORCHESTRATION = {"prefect", "prefect_dask", "dask", "distributed", "typer"}

# Which layers each layer may import (docs/DESIGN.md): train -> stages -> store, data. ``base`` is
# the package root, ``pipeline.errors``, which every layer raises, and ``pipeline.procs`` (worker
# processes that end with their parent), which any layer starting processes uses.
MAY_IMPORT = {
    "base": {"base"},
    "data": {"base", "data"},
    "store": {"base", "store"},
    "stages": {"base", "data", "store", "stages", "models"},
    "train": {"base", "data", "store", "stages", "train", "models", "viz"},
    "synth": {"base", "data", "synth"},
    "models": {"base", "models"},
    "viz": {"base", "viz"},
}


def layer(module: str) -> str:
    if module in ("pipeline", "pipeline.errors", "pipeline.procs"):
        return "base"
    if module.split(".")[0] == "models":
        return "models"
    return module.split(".")[1]


def modules(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted name -> file of every module under ``packages`` (a package is its ``__init__.py``)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) of every import in a module, relative ones resolved. A name taken
    from a module counts as that module, unless it is itself a module (a submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # a module taking a name from itself can only mean a submodule that is not there
                found.append((sub if sub in known or base == name else base, node.lineno))
    return found


def project_edges(root: Path = REPO, packages=PACKAGES) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> project modules it imports, imports of project modules that do not exist)."""
    known = modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in known}
    unknown = []
    for name, path in known.items():
        for target, line in imports(name, path, known):
            if target.split(".")[0] not in packages:
                continue
            if target in known:
                graph[name].add(target)
            else:
                unknown.append(f"{path.relative_to(root)}:{line}: {target}")
    return graph, unknown


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself),
    by Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


# --- the project ---------------------------------------------------------------------------------


def test_every_project_import_names_a_module_that_exists():
    _, unknown = project_edges()
    assert not unknown, "imports of modules that do not exist:\n" + "\n".join(unknown)


def test_no_import_cycles():
    graph, _ = project_edges()
    assert len(graph) > 50  # the walk found the packages
    assert not cycles(graph), f"import cycles: {cycles(graph)}"


def test_pipeline_and_models_never_import_prefect_dask_or_typer():
    known = modules(REPO)
    bad = [
        f"{path.relative_to(REPO)}:{line}: {target}"
        for name, path in known.items()
        for target, line in imports(name, path, known)
        if target.split(".")[0] in ORCHESTRATION
    ]
    assert not bad, "orchestration imports in pipeline/ or models/:\n" + "\n".join(bad)


def test_layers_import_only_the_layers_below():
    graph, _ = project_edges()
    assert {layer(name) for name in graph} == set(MAY_IMPORT)
    bad = sorted(f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, targets in graph.items() for b in targets if layer(b) not in MAY_IMPORT[layer(a)])
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


# --- the checker itself, on a tree made for it -----------------------------------------------------


def test_the_walk_sees_lazy_relative_and_submodule_imports(tmp_path):
    files = {
        "pipeline/__init__.py": "",
        "pipeline/errors.py": "",
        "pipeline/store/__init__.py": "",
        "pipeline/store/catalog.py": "def table():\n    from ..stages import index\n    return index\n",
        "pipeline/stages/__init__.py": "from pipeline.stages import index\nfrom . import gone\n",
        "pipeline/stages/index.py": "import prefect.flows\nfrom pipeline.stages import STAGES\nfrom pipeline.errors import HvdError\n",
        "models/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph, unknown = project_edges(tmp_path)
    assert graph["pipeline.store.catalog"] == {"pipeline.stages.index"}  # inside a function, relative
    assert graph["pipeline.stages.index"] == {"pipeline.stages", "pipeline.errors"}  # a name from a package: the package
    assert unknown == ["pipeline/stages/__init__.py:2: pipeline.stages.gone"]
    assert cycles(graph) == [["pipeline.stages", "pipeline.stages.index"]]
    assert layer("pipeline.stages.index") not in MAY_IMPORT[layer("pipeline.store.catalog")]
    known = modules(tmp_path)
    assert ("prefect.flows", 1) in imports("pipeline.stages.index", known["pipeline.stages.index"], known)
