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


_ALONE = """
import importlib, os, sys, traceback
for lib in ("numpy", "torch", "pyarrow", "pyarrow.parquet", "pydantic", "typer", "rich", "yaml", "transformers",
            "sentence_transformers", "faiss", "fastapi"):  # third-party only: no embedforge module is loaded here
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
assert not [m for m in sys.modules if m.startswith("embedforge")]
bad = 0
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a child that has loaded no embedforge module imports just this one
        try:
            importlib.import_module(name)
        except BaseException:
            print(name, traceback.format_exc().strip().splitlines()[-1], flush=True)
            os._exit(1)
        os._exit(0)
    bad += os.waitpid(pid, 0)[1] != 0
sys.exit(1 if bad else 0)
"""


@pytest.mark.slow
def test_every_module_imports_alone() -> None:
    """Each module imports on its own, in a process that has loaded no other embedforge module (a fork of one
    that preloaded the heavy third-party libraries), so a module that only imports after another one shows up."""
    triton_kernels = {"embedforge.kernels." + m for m in ("topk", "quant", "hamming", "binary", "pooling",
                                                          "rescoring", "selection")}
    try:
        import triton  # noqa: F401
    except ImportError:  # the Triton kernel modules need Triton; everything else must import without it
        names = sorted(set(MODULES) - triton_kernels)
    else:
        names = sorted(MODULES)
    proc = subprocess.run([sys.executable, "-P", "-c", _ALONE, *names], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
