"""The delivery web modules import one another without a cycle.

``deps`` holds what the routes share, ``api`` / ``page`` / ``sse`` import it, and ``web``
assembles their routers; nothing imports ``web`` back. The graph counts every import
statement in a module, at module level or inside a function (a function-level import
that dodges a cycle at import time is still a cycle), but not ``if TYPE_CHECKING:``
blocks, which never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import engine

ROOT = Path(engine.__file__).parent.parent


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (``from package import name`` counts
    as importing ``package.name`` when that is a module)."""
    modules = {
        f"{package}.{p.stem}" if p.stem != "__init__" else package: p
        for p in sorted(package_dir.glob("*.py"))
    }
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (``[a, b, ..., a]``), or ``[]`` if the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_find_cycle_finds_a_function_level_cycle(tmp_path: Path) -> None:
    """The check itself: web importing api inside a function while api imports web (the
    layout this replaced) is a cycle; a TYPE_CHECKING import is not."""
    (tmp_path / "web.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.page import x\n"
        "def routers():\n    from pkg.api import api_router\n"
    )
    (tmp_path / "api.py").write_text("from pkg.web import current_tenant\n")
    (tmp_path / "page.py").write_text("from pkg import web\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {"pkg.web": {"pkg.api"}, "pkg.api": {"pkg.web"}, "pkg.page": {"pkg.web"}}
    assert find_cycle(graph) == ["pkg.api", "pkg.web", "pkg.api"]
    (tmp_path / "api.py").write_text("from pkg.deps import current_tenant\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == []


@pytest.mark.parametrize("package", ["engine.delivery", "engine.gateway", "engine.gateway.routes"])
def test_http_packages_have_no_import_cycle(package: str) -> None:
    graph = import_graph(ROOT / package.replace(".", "/"), package)
    assert find_cycle(graph) == []


def test_web_modules_import_deps_and_nothing_imports_web_back() -> None:
    graph = import_graph(ROOT / "engine" / "delivery", "engine.delivery")
    for name in ("api", "page", "sse"):
        assert "engine.delivery.deps" in graph[f"engine.delivery.{name}"]
    assert {"engine.delivery.api", "engine.delivery.page", "engine.delivery.sse"} <= graph[
        "engine.delivery.web"
    ]
    assert not {m for m, deps in graph.items() if "engine.delivery.web" in deps} - {
        "engine.delivery"  # the package's lazy ``routers`` attribute
    }


def test_a_route_module_imports_first_in_a_fresh_interpreter() -> None:
    """``sse`` first, then the assembly: with ``web`` imported back by a route module
    (a cycle at module level) this is an ImportError on a partly initialised module."""
    code = "import engine.delivery.sse; from engine.delivery import routers; print(routers)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "function routers" in done.stdout
