"""The house reads one way: every import points down the floors, and no module-level cycle.

Floors, lowest first (a module may import its own floor and the floors below it):
1. values and write side: ``memswarm_es.errors``, ``scopes``, ``principals``, ``events``,
   ``waiting``, ``commands`` (the decide-and-append loop), ``log``
2. read side: ``projections``
3. history and access: ``memswarm_es.audit``, ``timetravel``, ``snapshots``, ``forget``,
   ``reembed``, ``access``
4. facade: ``memswarm_es.memory`` and the modules it is made of, ``aio``, ``subscribe``
5. command line and integrations: ``memswarm_es.cli``, ``memswarm_es.integrations``
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("memswarm_es", "projections")

FLOORS: list[tuple[int, tuple[str, ...]]] = [
    (1, ("memswarm_es.errors", "memswarm_es.scopes", "memswarm_es.principals",
         "memswarm_es.events", "memswarm_es.waiting", "memswarm_es.commands", "memswarm_es.log")),
    (2, ("projections",)),
    (3, ("memswarm_es.audit", "memswarm_es.timetravel", "memswarm_es.snapshots",
         "memswarm_es.forget", "memswarm_es.reembed", "memswarm_es.access")),
    (5, ("memswarm_es.cli", "memswarm_es.integrations")),
    (4, ("memswarm_es",)),  # everything else in memswarm_es: the facade and its parts
]


def floor_of(module: str) -> int:
    for floor, prefixes in FLOORS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return floor
    raise AssertionError(f"{module} is on no floor")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    """The project modules that ``module`` imports (at module level only, if asked); with
    ``top_level_only`` also the packages whose ``__init__`` those imports run first."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also look inside module-level if/try blocks, not in functions
        nodes = [n for top in tree.body for n in _module_level(top)]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    if top_level_only:  # importing a.b.c runs the __init__ of a and of a.b first
        found |= {".".join(m.split(".")[:i]) for m in list(found)
                  for i in range(1, m.count(".") + 1)}
    known = modules()
    return {m for m in found if m in known and m != module}


def _module_level(node: ast.stmt) -> list[ast.stmt]:
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        return []  # typing only: no import at run time
    if isinstance(node, (ast.If, ast.Try)):
        inner = list(node.body) + list(node.orelse)
        if isinstance(node, ast.Try):
            inner += [s for h in node.handlers for s in h.body] + list(node.finalbody)
        return [n for s in inner for n in _module_level(s)]
    return [node]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def test_every_import_points_down_the_floors() -> None:
    upward = []
    for module, path in modules().items():
        for target in imports(module, path, top_level_only=False):
            if floor_of(target) > floor_of(module):
                upward.append(f"{module} (floor {floor_of(module)}) imports {target} "
                              f"(floor {floor_of(target)})")
    assert upward == []


def test_no_module_level_import_cycle() -> None:
    graph = {m: imports(m, p, top_level_only=True) for m, p in modules().items()}
    # A package's __init__ re-exporting its own modules is not a cycle through them.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_each_floor_imports_alone_in_a_fresh_interpreter() -> None:
    for module in ("memswarm_es.events", "memswarm_es.log", "projections.fold",
                   "projections.in_memory", "memswarm_es.timetravel", "memswarm_es"):
        out = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
