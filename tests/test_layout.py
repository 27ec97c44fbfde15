"""The code's layout holds its rules: stages import only earlier stages, no module imports
itself in a loop, long modules say why, and ``setup.py`` ships every package.

Imports are read from the source (every ``import`` and ``from ... import``, inside
functions too), so a loop hidden in a function body counts as well.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("beam_pipeline", "transforms")
# transforms' stages in import order (transforms/__init__.py): each may import the ones
# before it; the launcher (beam_pipeline) may import them all.
STAGES = ("common", "inputs", "content", "reading", "output", "report")
MAX_LINES = 400
LONG_REASON = re.compile(r"^Longer than 400 lines: ", re.M)


def project_modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: pathlib.Path, known) -> set[str]:
    """The project modules that ``name`` imports anywhere in its source."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from package import module`` imports the module, not the package's other parts.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import a.b.c`` imports a, a.b and a.b.c; the package __init__s are
            # docstrings, so only the deepest project module counts.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target not in PACKAGES:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] == "transforms" and len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return None


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_stages_import_only_earlier_stages():
    wrong = []
    for module, targets in import_graph().items():
        if module.startswith("transforms.") and stage_of(module) is None:
            wrong.append(f"{module}: outside every stage package")
            continue
        for target in targets:
            if target.startswith("beam_pipeline") and not module.startswith("beam_pipeline"):
                wrong.append(f"{module} imports the launcher's {target}")
            elif stage_of(module) is not None and stage_of(target) > stage_of(module):
                wrong.append(f"{module} imports {target}, a later stage")
    assert wrong == []


def test_long_modules_say_why():
    long_ones = []
    for module, path in project_modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and not LONG_REASON.search(ast.get_docstring(
                ast.parse(text)) or ""):
            long_ones.append(f"{module}: {text.count(chr(10))} lines")
    assert long_ones == []


def test_setup_lists_every_package():
    setup = (ROOT / "setup.py").read_text()
    listed = set(re.findall(r'"((?:beam_pipeline|transforms)[\w.]*)"', setup))
    packages = {name for name, path in project_modules().items() if path.name == "__init__.py"}
    assert listed == packages


@pytest.mark.parametrize("package", sorted(STAGES))
def test_every_stage_says_what_lives_there(package):
    init = ROOT / "transforms" / package / "__init__.py"
    assert (ast.get_docstring(ast.parse(init.read_text())) or "").count("\n") >= 2
