"""The ``embedforge`` command line: validate, run, status, and the command groups in ``embedforge.commands``."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from embedforge.commands import COMMAND_MODULES, fail
from embedforge.progress import console, setup_logging

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="embedforge: domain corpus → domain-tuned embedding model and its embeddings.")


def _print_version(value: bool) -> None:
    if value:
        from embedforge import __version__

        typer.echo(f"embedforge {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                                   help="Print the version and exit")] = False,
             verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                                  help="Show third-party progress bars and warnings")] = 0) -> None:
    """embedforge: domain corpus → domain-tuned embedding model and its embeddings."""
    from embedforge.progress import quiet_third_party

    quiet_third_party(verbose)

Overrides = Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides, e.g. stages.chunk.max_tokens=256")]


def _load(job: Path, overrides: list[str] | None):  # noqa: ANN202
    from embedforge.spec import SpecError, load_spec

    try:
        return load_spec(job, overrides)
    except SpecError as exc:
        fail(str(exc))


@app.command()
def validate(job: Path, overrides: Overrides = None,
             explain: Annotated[bool, typer.Option(help="List every field of each stage with its description")] = False) -> None:
    """Validate a job spec (and overrides); print the stages, their hashes and output directories."""
    from embedforge.preflight import preflight
    from embedforge.runner import plan
    from embedforge.spec import SpecError, describe

    spec = _load(job, overrides)
    try:
        outputs = plan(spec)
        preflight(spec, str(job))
    except SpecError as exc:
        fail(str(exc))
    table = Table("stage", "hash", "output")
    for name, out in outputs.items():
        table.add_row(name, out.hash, out.location)
    console.print(f"[green]{job}: valid[/] — job '{spec.name}', {len(spec.stages)} stages")
    console.print(table)
    if explain:
        for name in spec.stage_names():
            console.print(f"[bold]{name}[/]")
            for line in describe(type(spec.config(name)), "  "):
                console.print(line, highlight=False, markup=False)


@app.command()
def run(job: Path, overrides: Overrides = None,
        stages: Annotated[str | None, typer.Option("--stages", "-s", help="Comma-separated stages to run (default: all)")] = None,
        force: Annotated[bool, typer.Option("--force", "-f", help="Re-run the selected stages from scratch")] = False,
        log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info") -> None:
    """Run a job: each stage is skipped when finished, resumed when partial, re-run when its config changed."""
    from embedforge.preflight import preflight
    from embedforge.runner import run_job
    from embedforge.spec import SpecError
    from embedforge.stages.base import StageFailed

    setup_logging(log_level)
    spec = _load(job, overrides)
    try:
        preflight(spec, str(job))  # the job's paths and models, before any stage runs
        results = run_job(spec, stages.split(",") if stages else None, force=force)
    except SpecError as exc:  # found before the first stage ran: a problem of the job spec
        fail(str(exc))
    except (StageFailed, FileNotFoundError, ValueError) as exc:
        fail(str(exc), 1)
    table = Table("stage", "rows out", "quarantined", "seconds")
    for name, manifest in results.items():
        table.add_row(name, _cell(manifest.get("rows_out")), _cell(manifest.get("quarantined")),
                      _cell(manifest.get("timings", {}).get("seconds")))
    console.print(table)
    if guard := (results.get("train") or {}).get("guard"):  # the regression guard's verdict, in plain words
        console.print(f"train: {guard['message']}", markup=False, style=None if guard["better"] else "bold yellow")
    _print_headline(spec)


def _cell(value: object) -> str:
    if value is None:
        return "–"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _print_headline(spec) -> None:  # noqa: ANN001
    """The job's headline numbers: tuned vs base nDCG@10 per dimension, flagged when the tuned model is worse."""
    from embedforge.evaluation.report import headline
    from embedforge.runner import plan

    if "evaluate" not in spec.stages:
        return
    results = plan(spec)["evaluate"].dir / "results.json"
    if not results.is_file():
        return
    rows = headline(json.loads(results.read_text()))
    if not rows:
        return
    table = Table("dataset", "dim", "base nDCG@10", "tuned nDCG@10", "Δ", "")
    for r in rows:
        table.add_row(str(r["dataset"]), _cell(r["dim"]), f"{r['base']:.4f}", f"{r['tuned']:.4f}", f"{r['delta']:+.4f}",
                      "[bold red]tuned is worse[/]" if r["worse"] else "")
    console.print(table)


@app.command()
def status(job: Path, overrides: Overrides = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Per stage: done / partial / stale / missing, rows, quarantined and time."""
    from embedforge.runner import status as job_status
    from embedforge.spec import SpecError

    try:
        rows = job_status(_load(job, overrides))
    except SpecError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("stage", "state", "hash", "rows out", "quarantined", "seconds")
    for r in rows:
        table.add_row(r["stage"], r["state"], r["hash"], _cell(r["rows_out"]), _cell(r["quarantined"]), _cell(r["seconds"]))
    console.print(table)


for _module in COMMAND_MODULES:
    importlib.import_module(f"embedforge.commands.{_module}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
