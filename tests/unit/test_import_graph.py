"""No import cycle: the module-level import graph of ``embedforge`` is acyclic, stages never import the runner
(which imports them through importlib), and each module imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = {REPO / "engine": "embedforge", REPO / "kernels": "embedforge.kernels"}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for root, package in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
            out[name] = path
    return out


MODULES = _modules()


def _top_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: top level, inside try/if blocks, not under ``if TYPE_CHECKING``."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                found += _top_level_imports(node.body) + _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            found += _top_level_imports(node.body)
            for handler in node.handlers:
                found += _top_level_imports(handler.body)
    return found


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The embedforge modules an import statement loads (``from a import b`` loads ``a`` and, if a module, ``a.b``)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    base = node.module or ""
    out = {base} if base in MODULES else set()
    out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return out


def _all_imports(path: Path) -> set[str]:
    """Every embedforge module ``path`` imports anywhere (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for t in _targets(node)}


def test_module_level_import_graph_has_no_cycle() -> None:
    graph = {name: sorted(t for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8")).body)
                          for t in _targets(node) if t != name)
             for name, path in MODULES.items()}
    assert len(graph) > 100 and graph["embedforge.search.quantize"], "the walk found the package and its imports"
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name)


def test_stage_modules_never_import_the_runner() -> None:
    """The runner imports each stage module through importlib; a stage importing the runner (even inside a
    function) would close that loop. Stages get StageContext/StageFailed from ``embedforge.stages.base``."""
    stages = {n: p for n, p in MODULES.items() if n.startswith("embedforge.stages.")}
    assert "embedforge.stages.mine" in stages
    offenders = {n: sorted(_all_imports(p) & {"embedforge.runner", "embedforge.cli"}) for n, p in stages.items()}
    assert not {n: v for n, v in offenders.items() if v}


def test_the_runner_imports_no_stage_module_at_import_time() -> None:
    code = ("import sys, embedforge.runner, embedforge.cli\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('embedforge.stages.') and m != 'embedforge.stages.base')\n"
            "print(loaded)\n")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    """One interpreter per module, so a module that only imports after another one has been loaded shows up."""
    skip = {"embedforge.kernels.topk", "embedforge.kernels.quant", "embedforge.kernels.hamming",
            "embedforge.kernels.binary", "embedforge.kernels.pooling", "embedforge.kernels.rescoring",
            "embedforge.kernels.selection"}  # Triton kernels: imported only where Triton is installed
    try:
        import triton  # noqa: F401

        skip = set()
    except ImportError:
        pass
    failures = []
    for name in sorted(set(MODULES) - skip):
        proc = subprocess.run([sys.executable, "-P", "-c", f"import {name}"], capture_output=True, text=True,
                              cwd=REPO, timeout=300)
        if proc.returncode:
            failures.append(f"{name}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    assert not failures, "\n".join(failures)
