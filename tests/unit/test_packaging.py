"""One import name: the folders engine/ and kernels/ install as ``embedforge`` and ``embedforge.kernels`` only."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_installed_under_embedforge() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {"embedforge": REPO / "engine", "embedforge.kernels": REPO / "kernels"}
    assert config["package-dir"] == {name: path.name for name, path in roots.items()}
    found = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found == listed


@pytest.mark.parametrize("where", ["elsewhere", "repo root with -P"])
def test_no_top_level_engine_or_kernels_and_transformers_is_quiet(where: str, tmp_path: Path) -> None:
    """Only ``embedforge`` imports; transformers and bitsandbytes probe the Hugging Face ``kernels`` package and must
    not find our folder under that name. From the repository root, ``python -P`` (what the tests, the Makefile and
    the CLI's own subprocesses use) keeps the working directory off ``sys.path``; the ``embedforge`` script never
    puts it there."""
    code = (
        "import importlib.util as u, pathlib, sys\n"
        "repo = pathlib.Path(sys.argv[1])\n"
        "for name in ('engine', 'kernels'):\n"
        "    spec = u.find_spec(name)\n"
        "    assert spec is None or repo not in pathlib.Path(spec.origin or '/').parents, (name, spec)\n"
        "import embedforge, embedforge.kernels, embedforge.cli\n"
        "assert pathlib.Path(embedforge.kernels.__file__).parent == repo / 'kernels'\n"
        "import transformers, bitsandbytes\n"
        "print('ok')\n"
    )
    args, cwd = ([sys.executable, "-c"], tmp_path) if where == "elsewhere" else ([sys.executable, "-P", "-c"], REPO)
    proc = subprocess.run([*args, code, str(REPO)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "'get_kernel' from 'kernels'" not in proc.stderr
    assert str(REPO / "kernels") not in proc.stderr
