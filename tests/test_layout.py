"""The package's three wings: the torch-only core (``lerac/``), the training engine
(``lerac/engine/``) and the Hydra suite (``lerac/suite/``), plus the trainer integrations
(``lerac/integrations/``). A wing imports only itself and the wings below it, the module
graph has no cycle, and the core and the engine load none of the suite's frameworks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lerac"
# Which wings each wing may import (itself included).
ALLOWED = {
    "core": {"core"},
    "engine": {"core", "engine"},
    "integrations": {"core", "integrations"},
    "suite": {"core", "engine", "suite"},
}
FRAMEWORKS = {"hydra", "omegaconf", "transformers", "wandb"}
CORE_THIRD_PARTY = {"torch", "numpy"}  # the core install's dependencies (pyproject.toml)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ALLOWED else "core"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_a_wing_imports_only_itself_and_the_wings_below():
    upward = [
        f"{module} ({wing(module)}) imports {target} ({wing(target)})"
        for module, targets in graph().items()
        for target in targets
        if wing(target) not in ALLOWED[wing(module)]
    ]
    assert not upward, "\n".join(upward)


def test_the_modules_import_no_cycle():
    edges = graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return path + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [start])
            assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("which", ["core", "engine"])
def test_the_core_and_the_engine_name_no_suite_framework(which):
    for path in PACKAGE.rglob("*.py"):
        if wing(module_name(path)) != which:
            continue
        roots = {m.split(".")[0] for m in imports_of(path)}
        assert not roots & FRAMEWORKS, f"{path.name} imports {roots & FRAMEWORKS}"
        if which == "core":
            third_party = roots - set(sys.stdlib_module_names) - {"lerac", "__future__"}
            assert third_party <= CORE_THIRD_PARTY, f"{path.name} imports {third_party}"


def test_importing_the_engine_loads_no_suite_framework():
    code = (
        "import sys, lerac, lerac.engine.loop, lerac.engine.released, lerac.engine.store;"
        f"print(sorted(m for m in {sorted(FRAMEWORKS)!r} if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_the_core_holds_at_most_a_dozen_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "engine",
        "integrations",
        "suite",
    }
