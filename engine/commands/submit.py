"""``embedforge submit`` (Ray Jobs or Slurm) and ``embedforge jobs list|status|logs|cancel``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from embedforge.commands import fail
from embedforge.progress import console

RayAddress = Annotated[str | None, typer.Option("--ray", help="Ray dashboard address (default: $RAY_ADDRESS)")]


def _address(address: str | None) -> str:
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        fail("no Ray address: pass --ray http://HEAD:8265 or set RAY_ADDRESS")
    return address  # type: ignore[return-value]


def submit_to_ray(address: str, request: dict, follow: bool, done_note: str = "") -> str:
    """Submit a Ray job request, print its id on stdout and, with ``follow``, stream its logs to the end."""
    from embedforge.cluster import ray_jobs

    job_id = ray_jobs.submit(address, request)
    sys.stdout.write(job_id + "\n")
    sys.stdout.flush()
    if follow:
        final = ray_jobs.follow(address, job_id, lambda s: sys.stderr.write(s))
        console.print(f"job {job_id}: {final}{done_note}")
        if final != "SUCCEEDED":
            raise typer.Exit(1)
    return job_id


def submit(
    job: Path,
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides")] = None,
    ray: RayAddress = None,
    slurm: Annotated[bool, typer.Option(help="Submit to Slurm with sbatch instead of Ray")] = False,
    stages: Annotated[str | None, typer.Option(help="Comma-separated stages (default: all)")] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition")] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account")] = None,
    time_limit: Annotated[str, typer.Option("--time", help="Slurm time limit")] = "24:00:00",
    dry_run: Annotated[bool, typer.Option(help="Print what would be submitted (sbatch script or Ray request)")] = False,
    pip: Annotated[list[str] | None, typer.Option(help="Packages for the Ray runtime env, e.g. 'embedforge[gpu]' or a wheel path")] = None,
    working_dir: Annotated[Path, typer.Option(help="Project directory uploaded as the Ray working_dir")] = Path("."),
    follow: Annotated[bool, typer.Option(help="Stream the Ray job's logs until it ends")] = False,
) -> None:
    """Submit a job spec to a Ray cluster (Jobs API) or to Slurm (sbatch); prints the job id."""
    from embedforge.cluster import ray_jobs
    from embedforge.cluster import slurm as slurm_mod
    from embedforge.runner import job_dir
    from embedforge.spec import SpecError, load_spec

    names = stages.split(",") if stages else None
    try:
        spec = load_spec(job, overrides)
        if names:
            for n in names:
                spec.config(n)
                if n not in spec.stages:
                    fail(f"stage '{n}' is not in job '{spec.name}'")
        if slurm:
            script = slurm_mod.sbatch_script(spec, job, overrides=overrides, partition=partition, account=account,
                                             time_limit=time_limit, stages=names)
            if dry_run:
                sys.stdout.write(script)
                return
            job_id = slurm_mod.submit(script, job_dir(spec) / "submit.sbatch")
            console.print(f"submitted Slurm job {job_id}")
            sys.stdout.write(job_id + "\n")
            return
        address = _address(ray)
        request = ray_jobs.build_submission(job, working_dir=working_dir, overrides=overrides, stages=names, pip=pip)
        if dry_run:
            import json

            sys.stdout.write(json.dumps(request, indent=2) + "\n")
            return
        submit_to_ray(address, request, follow)
    except (SpecError, ray_jobs.ClusterError, slurm_mod.SlurmError) as exc:
        fail(str(exc))


jobs_app = typer.Typer(help="Jobs on a Ray cluster: list, status, logs, cancel.", no_args_is_help=True)


@jobs_app.command("list")
def jobs_list(ray: RayAddress = None) -> None:
    """Jobs known to the cluster."""
    from embedforge.cluster import ray_jobs

    try:
        rows = ray_jobs.list_jobs(_address(ray))
    except ray_jobs.ClusterError as exc:
        fail(str(exc))
    table = Table("id", "status", "job", "entrypoint")
    for r in rows:
        table.add_row(r["id"], r["status"], r["job"], r["entrypoint"])
    Console(width=200).print(table)  # stdout: the listing is the command's output


@jobs_app.command("status")
def jobs_status(job_id: str, ray: RayAddress = None) -> None:
    """Status of one job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    from embedforge.cluster import ray_jobs

    try:
        sys.stdout.write(ray_jobs.status(_address(ray), job_id) + "\n")
    except ray_jobs.ClusterError as exc:
        fail(str(exc))
    except RuntimeError as exc:
        fail(f"job {job_id}: {exc}")


@jobs_app.command("logs")
def jobs_logs(job_id: str, ray: RayAddress = None,
              follow: Annotated[bool, typer.Option(help="Keep streaming until the job ends")] = False) -> None:
    """Logs of one job."""
    from embedforge.cluster import ray_jobs

    try:
        if follow:
            ray_jobs.follow(_address(ray), job_id, lambda s: sys.stdout.write(s))
        else:
            sys.stdout.write(ray_jobs.logs(_address(ray), job_id))
    except ray_jobs.ClusterError as exc:
        fail(str(exc))
    except RuntimeError as exc:
        fail(f"job {job_id}: {exc}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, ray: RayAddress = None) -> None:
    """Stop a running job."""
    from embedforge.cluster import ray_jobs

    try:
        stopped = ray_jobs.cancel(_address(ray), job_id)
    except ray_jobs.ClusterError as exc:
        fail(str(exc))
    except RuntimeError as exc:
        fail(f"job {job_id}: {exc}")
    console.print(f"job {job_id}: {'stop requested' if stopped else 'already finished'}")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.add_typer(jobs_app, name="jobs")
