"""Slurm submission: the sbatch script carries the per-stage resources of the spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedforge.cluster.slurm import SlurmError, sbatch_script, submit
from embedforge.spec import SpecError, validate_dict


def _spec(tmp_path: Path):  # noqa: ANN202
    return validate_dict({"name": "gpujob", "run_dir": str(tmp_path / "runs"), "stages": {
        "ingest": {"sources": [{"path": "x.jsonl"}], "resources": {"cpus": 4, "memory": "8GiB"}},
        "chunk": {"resources": {"gpus": 2, "cpus": 16, "memory": "64GB"}},
    }})


def test_script_has_allocation_and_one_step_per_stage(tmp_path: Path) -> None:
    script = sbatch_script(_spec(tmp_path), Path("jobs/x.yaml"), partition="gpu", account="lab",
                           overrides=["stages.chunk.max_tokens=128"], time_limit="02:00:00")
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --gres=gpu:2" in header and "#SBATCH --cpus-per-task=16" in header
    assert "#SBATCH --mem=61036M" in header  # 64 GB (decimal) is the largest request, in MiB rounded up
    assert "#SBATCH --partition=gpu" in header and "#SBATCH --account=lab" in header
    assert "#SBATCH --time=02:00:00" in header
    steps = [line for line in script.splitlines() if line.startswith("srun")]
    assert len(steps) == 2
    # ingest leaves gpus unset: it gets what the allocation has, like "all local GPUs" on one machine
    assert steps[0].startswith("srun --ntasks=1 --cpus-per-task=4 --gres=gpu:2 --mem=8192M embedforge run jobs/x.yaml "
                               "--stages ingest")
    assert "--gres=gpu:2" in steps[1] and "--cpus-per-task=16" in steps[1] and steps[1].endswith(
        "--stages chunk stages.chunk.max_tokens=128")


def test_cli_dry_run_prints_the_script(cli, tmp_path: Path) -> None:
    out = cli("submit", "jobs/quickstart.yaml", "--slurm", "--dry-run", "--partition", "a100",
              "stages.chunk.resources.gpus=1").stdout
    assert out.startswith("#!/bin/bash") and "#SBATCH --partition=a100" in out and "#SBATCH --gres=gpu:1" in out


def test_missing_sbatch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="sbatch was not found"):
        submit("#!/bin/bash\n", tmp_path / "s.sbatch")


def test_bad_resources_are_rejected() -> None:
    with pytest.raises(SpecError, match=r"stages.chunk.resources.gpus"):
        validate_dict({"stages": {"chunk": {"resources": {"gpus": -1}}}})
    with pytest.raises(SpecError, match=r"stages.chunk.resources.memory"):
        validate_dict({"stages": {"chunk": {"resources": {"memory": "a lot"}}}})
