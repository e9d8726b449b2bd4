"""Slurm for sites without Ray: one sbatch script per job, one ``srun`` step per stage with its own resources.

Each step runs ``embedforge run JOB --stages NAME``; because stages skip when finished and resume when partial,
a requeued or resubmitted script continues where the last one stopped.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from embedforge.runner import job_dir
from embedforge.spec import JobSpec


class SlurmError(RuntimeError):
    """sbatch is missing or refused the script."""


def _mem_mb(nbytes: int | None) -> int | None:
    return math.ceil(nbytes / 1024**2) if nbytes else None


def sbatch_script(spec: JobSpec, job: Path, *, overrides: list[str] | None = None, partition: str | None = None,
                  time_limit: str = "24:00:00", account: str | None = None, workdir: Path | None = None,
                  command: str = "embedforge", stages: list[str] | None = None) -> str:
    """The sbatch script: the allocation is the largest stage request; each stage is one ``srun`` step."""
    names = stages or spec.stage_names()
    res = {n: spec.config(n).resources for n in names}
    gpus = max((r.gpus or 0 for r in res.values()), default=0)
    cpus = max((r.cpus or 0 for r in res.values()), default=0)
    mem = max((_mem_mb(r.memory_bytes()) or 0 for r in res.values()), default=0)
    workdir = (workdir or Path.cwd()).resolve()
    log_dir = job_dir(spec)  # a URL run_dir keeps its Slurm logs in the local scratch mirror
    lines = ["#!/bin/bash", f"#SBATCH --job-name=embedforge-{spec.name}", "#SBATCH --nodes=1", "#SBATCH --ntasks=1",
             f"#SBATCH --time={time_limit}", f"#SBATCH --output={log_dir}/slurm-%j.out"]
    if cpus:
        lines.append(f"#SBATCH --cpus-per-task={cpus}")
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    if mem:
        lines.append(f"#SBATCH --mem={mem}M")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    lines += ["", "set -euo pipefail", f"mkdir -p {shlex.quote(str(log_dir))}", f"cd {shlex.quote(str(workdir))}",
              "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1", ""]
    extra = " ".join(shlex.quote(o) for o in overrides or [])
    for name, r in res.items():
        step = ["srun", "--ntasks=1"]
        if r.cpus or cpus:
            step.append(f"--cpus-per-task={r.cpus or cpus}")
        step_gpus = r.gpus if r.gpus is not None else gpus
        if step_gpus:
            step.append(f"--gres=gpu:{step_gpus}")
        if r.memory_bytes():
            step.append(f"--mem={_mem_mb(r.memory_bytes())}M")
        run = f"{command} run {shlex.quote(str(job))} --stages {name}" + (f" {extra}" if extra else "")
        lines.append(f"echo \"== stage {name}\"")
        lines.append(" ".join(step) + f" {run}")
    return "\n".join(lines) + "\n"


def submit(script: str, script_path: Path) -> str:
    """Write the script and ``sbatch`` it; returns the Slurm job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SlurmError("sbatch was not found on PATH: run this on a Slurm login node, or use --dry-run to "
                         "print the script")
    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(script)
    proc = subprocess.run([sbatch, str(script_path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch refused {script_path}: {proc.stderr.strip() or proc.stdout.strip()}")
    m = re.search(r"Submitted batch job (\d+)", proc.stdout)
    if not m:
        raise SlurmError(f"unexpected sbatch output: {proc.stdout.strip()}")
    return m.group(1)
