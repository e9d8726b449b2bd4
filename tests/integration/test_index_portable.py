"""An exported index records its model relative to itself: a run directory that is moved (or searched from
another working directory) still finds its model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def test_search_after_moving_the_run_dir(cli, tmp_path: Path, minilm_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(minilm_path, project / "my-model")  # a local model given by a relative path
    (project / "job.yaml").write_text("name: port\nrun_dir: runs\nbase_model: my-model\nstages:\n"
                                      "  ingest: {sources: [{path: builtin:adi}]}\n  chunk: {max_tokens: 128}\n"
                                      "  embed: {dims: [64], index: {kinds: [flat]}}\n")
    cli("run", "job.yaml", cwd=project)
    moved = tmp_path / "moved"
    project.rename(moved)
    stage_dir = next((moved / "runs" / "port").glob("embed-*"))
    meta = json.loads(next((stage_dir / "index").rglob("meta.json")).read_text())
    assert not Path(meta["model_path"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = cli("search", str(stage_dir), "computer-based information retrieval", "--k", "3", "--json",
              cwd=elsewhere).stdout
    hits = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(hits) == 3 and hits[0]["score"] >= hits[-1]["score"]
