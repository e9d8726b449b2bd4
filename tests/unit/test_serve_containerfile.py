"""Containerfile.cuda is not built here (no container engine): check it by construction instead."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedforge.cli import app


@pytest.fixture(scope="module")
def containerfile(repo: Path) -> str:
    return (repo / "Containerfile.cuda").read_text()


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    rows = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1] if " " in row else "") for row in rows]


def test_two_stages_cuda_devel_then_runtime(containerfile: str) -> None:
    froms = [arg for op, arg in _instructions(containerfile) if op == "FROM"]
    assert len(froms) == 2
    assert "nvidia/cuda" in froms[0] and "-devel-" in froms[0] and froms[0].endswith("AS build")
    assert "nvidia/cuda" in froms[1] and "-runtime-" in froms[1]
    assert "COPY --from=build /opt/venv /opt/venv" in containerfile


def test_installs_the_gpu_extra_from_files_that_exist(containerfile: str, repo: Path) -> None:
    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "gpu" in extras and 'pip install ".[gpu]"' in containerfile
    build_stage = containerfile.split("AS runtime")[0]
    for op, arg in _instructions(build_stage):
        if op == "COPY" and "--from" not in arg:
            for source in arg.split()[:-1]:
                assert (repo / source).exists(), f"COPY source {source} is missing from the repo"


def test_entrypoint_runs_serve_with_options_the_cli_accepts(containerfile: str) -> None:
    ops = dict(_instructions(containerfile))
    command = json.loads(ops["ENTRYPOINT"]) + json.loads(ops["CMD"])
    assert command[:3] == ["embedforge", "serve", "/models/model"]
    assert "ARG MODEL_DIR" in containerfile
    assert re.search(r"^COPY .*\$\{MODEL_DIR\} /models/model$", containerfile, re.M)
    help_text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for flag in (arg for arg in command if arg.startswith("--")):
        assert flag in help_text, f"{flag} is not an option of embedforge serve"
