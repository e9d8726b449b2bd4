"""Runs a job: stage order, run directories, skip/resume, manifests.

Each stage writes ``<run_dir>/<job>/<stage>-<hash12>/``. The hash covers the stage's result-changing config
fields and its inputs' hashes, so a changed field re-runs that stage and everything downstream, while an
unchanged finished stage (``_SUCCESS`` present) is skipped. An unfinished stage directory is resumed: the stage
skips the shards that are already complete.

Every stage directory lies inside ``run_dir`` once resolved (symbolic links included): :func:`plan` refuses a
job whose outputs would land elsewhere. A stage that fails leaves no empty directory behind, and its failure
is recorded beside it (``.<stage>-<hash>.failed.json``) so ``status`` says ``failed``. A stage's manifest
keeps the time of each attempt (a resumed stage has several) and their total.

``run_dir`` may also be an fsspec URL (``s3://…``, ``gs://…``, ``file://…``): stages then run in a local scratch
copy, completion is checked on the storage, upstream outputs are pulled on demand and a finished stage is pushed
with ``manifest.json`` and ``_SUCCESS`` last (:mod:`embedforge.data.run_storage`).
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from embedforge import __version__
from embedforge.configs.base import StageConfig, hashed_fields
from embedforge.data import run_storage
from embedforge.data.shards import ShardWriter, atomic_write_json, count_rows, list_shards, remove_stale_temps
from embedforge.provenance import git_sha, library_versions
from embedforge.spec import JobSpec, SpecError, stage_hash
from embedforge.stages import stage_info
from embedforge.stages.base import MANIFEST, SUCCESS, StageContext, StageFailed, StageOutput

log = logging.getLogger("embedforge.runner")


def job_dir(job: JobSpec) -> Path:
    """The job's local directory (the scratch mirror when ``run_dir`` is an fsspec URL)."""
    if run_storage.is_url(job.run_dir):
        return run_storage.scratch_dir(job.run_dir) / job.name
    return Path(job.run_dir) / job.name


def job_url(job: JobSpec) -> str | None:
    """The job's directory on shared storage (None for a local ``run_dir``)."""
    return run_storage.join(job.run_dir, job.name) if run_storage.is_url(job.run_dir) else None


def plan(job: JobSpec) -> dict[str, StageOutput]:
    """Hashes and directories of every stage of the job, in order (each checked to lie inside ``run_dir``)."""
    outputs: dict[str, StageOutput] = {}
    url = job_url(job)
    for name in job.stage_names():
        info = stage_info(name)
        input_hashes = {i: outputs[i].hash for i in info.inputs if i in outputs}
        h = stage_hash(job, name, input_hashes)
        outputs[name] = StageOutput(name, h, job_dir(job) / f"{name}-{h}",
                                    run_storage.join(url, f"{name}-{h}") if url else None)
        check_inside(job, outputs[name].dir)
    return outputs


def check_inside(job: JobSpec, path: Path) -> None:
    """Refuse an output path that resolves (symbolic links followed) outside the job's run directory."""
    root = run_storage.scratch_dir(job.run_dir) if run_storage.is_url(job.run_dir) else Path(job.run_dir)
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:  # a symbolic link loop on the way
        raise SpecError(f"run_dir {job.run_dir}: cannot resolve {path} ({exc})") from None
    if not inside:
        raise SpecError(f"name '{job.name}': the output {path} resolves to {path.resolve()}, outside run_dir "
                        f"{root.resolve()} (a symbolic link?); outputs must stay inside run_dir")


def _write_manifest(ctx: StageContext, out: StageOutput, started: float, seconds: float) -> dict[str, Any]:
    from embedforge import device as dev  # imports torch: not needed by validate/status

    writer = ShardWriter(ctx.out_dir) if (ctx.out_dir / "shards").is_dir() else None
    totals = writer.totals() if writer else {}
    quarantined = writer.merge_quarantine() if writer else 0
    counts = {**totals, **ctx.counts}
    counts.pop("rows_out", None)
    counts.pop("quarantined", None)
    manifest = {
        "stage": ctx.name,
        "hash": out.hash,
        "job": ctx.job.name,
        "spec_hash": ctx.job.spec_hash(),
        "config": ctx.config.model_dump(mode="json"),
        "hashed_config": hashed_fields(ctx.config),
        "inputs": {k: {"hash": v.hash, "dir": v.location} for k, v in ctx.inputs.items()},
        "code_version": {"embedforge": __version__, "git": git_sha(), "stage_version": ctx.info.version},
        "libraries": library_versions(),
        "machine": dev.machine(),
        "rows_out": count_rows(ctx.out_dir) if list_shards(ctx.out_dir / "shards") else None,
        "quarantined": quarantined + int(ctx.counts.get("quarantined", 0)),
        "counts": counts,
        "timings": _timings(ctx.out_dir, started, seconds),
        "throughput": ctx.throughput,
        **ctx.extra,
    }
    atomic_write_json(ctx.out_dir / MANIFEST, manifest)
    return manifest


ATTEMPTS = "_attempts.jsonl"
"""Start (and end, when it ended in-process) of each attempt of an unfinished stage; folded into the manifest."""


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _log_attempt(out_dir: Path, **row: Any) -> None:
    with open(out_dir / ATTEMPTS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _attempt_rows(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / ATTEMPTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _timings(out_dir: Path, started: float, seconds: float) -> dict[str, Any]:
    """Seconds per attempt and in total. An attempt killed without a word (SIGKILL) is timed up to the last
    file it wrote (``"ended": "killed"``)."""
    attempts, begun = [], None
    for row in _attempt_rows(out_dir)[:-1]:  # the last row is this attempt's start
        if "start" in row:
            begun = row["start"]
        elif begun is not None:
            attempts.append({"started": _stamp(begun), "seconds": round(max(row["end"] - begun, 0.0), 3),
                             "ended": row["ended"]})
            begun = None
    attempts.append({"started": _stamp(started), "seconds": round(seconds, 3), "ended": "done"})
    return {"started": attempts[0]["started"], "seconds": round(sum(a["seconds"] for a in attempts), 3),
            "seconds_last_attempt": round(seconds, 3), "attempts": attempts}


def _last_write(out_dir: Path) -> float:
    times = [p.stat().st_mtime for p in out_dir.rglob("*") if p.is_file() and p.name != ATTEMPTS]
    return max(times, default=0.0)


def _record_failure(out: StageOutput, exc: BaseException, started: float) -> None:
    """Leave no empty stage directory; note the failure next to it for ``status``."""
    if out.dir.is_dir() and not any(p.is_file() and p.name != ATTEMPTS for p in out.dir.rglob("*")):
        shutil.rmtree(out.dir, ignore_errors=True)
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return
    message = " ".join(str(exc).split())[:2000] or type(exc).__name__
    atomic_write_json(failure_path(out), {"stage": out.name, "hash": out.hash, "error": message,
                                          "type": type(exc).__name__, "started": _stamp(started),
                                          "failed": _stamp(time.time())})


def failure_path(out: StageOutput) -> Path:
    """Where a failed attempt of ``out`` is recorded (beside its directory; removed when the stage finishes)."""
    return out.dir.parent / f".{out.dir.name}.failed.json"


def run_stage(job: JobSpec, name: str, outputs: dict[str, StageOutput], force: bool = False) -> dict[str, Any]:
    """Run one stage (or skip it when finished); returns its manifest."""
    info = stage_info(name)
    out = outputs[name]
    if out.done and not force:
        log.info("stage %s: done (%s), skipped", name, out.location)
        return out.manifest()
    if force and out.dir.exists():
        shutil.rmtree(out.dir)
    if force and out.url:
        run_storage.remove(out.url)
    for upstream in info.inputs:
        if upstream in outputs and not outputs[upstream].done:
            raise StageFailed(f"stage '{name}' needs '{upstream}', which has not finished (run it first)")
    for upstream in info.inputs:
        if upstream in outputs:
            outputs[upstream].fetch()
    if out.url and (out.dir / SUCCESS).is_file():  # finished in scratch, but the push did not complete
        run_storage.push(out.dir, out.url)
        return out.manifest()
    if out.url and not (out.dir.exists() and any(out.dir.iterdir())) and run_storage.exists(out.url):
        run_storage.pull(out.url, out.dir, partial=True)  # resume what a stopped run on another machine pushed
    check_inside(job, out.dir)
    out.dir.mkdir(parents=True, exist_ok=True)
    config: StageConfig = job.config(name)
    ctx = StageContext(job=job, info=info, config=config, out_dir=out.dir,
                       inputs={i: outputs[i] for i in info.inputs if i in outputs})
    resumed = " (resuming)" if any(p.name != ATTEMPTS for p in out.dir.iterdir()) else ""
    if resumed and (stale := remove_stale_temps(out.dir)):  # torn writes of a killed run, in any sub-directory
        log.info("stage %s: removed %d temp file(s) of an interrupted run", name, len(stale))
    log.info("stage %s: running → %s%s", name, out.location, resumed)
    module = importlib.import_module(info.module)
    started = time.time()
    previous = _attempt_rows(out.dir)
    if previous and "start" in previous[-1]:  # the previous attempt was killed: its last write ends it
        _log_attempt(out.dir, end=max(_last_write(out.dir), previous[-1]["start"]), ended="killed")
    _log_attempt(out.dir, start=started)
    t0 = time.perf_counter()
    try:
        module.run(ctx)
    except BaseException as exc:
        _log_attempt(out.dir, end=time.time(), ended=f"failed: {type(exc).__name__}")
        if out.url:  # keep the finished shards where another machine can resume from them
            try:
                run_storage.push(out.dir, out.url, partial=True)
            except Exception:  # noqa: BLE001 - the stage's own error is the one to report
                log.warning("stage %s: could not upload its partial output to %s", name, out.url, exc_info=True)
        _record_failure(out, exc, started)
        raise
    manifest = _write_manifest(ctx, out, started, time.perf_counter() - t0)
    (out.dir / ATTEMPTS).unlink(missing_ok=True)
    failure_path(out).unlink(missing_ok=True)
    (out.dir / SUCCESS).write_text(out.hash + "\n")
    if out.url:
        run_storage.push(out.dir, out.url)
    log.info("stage %s: done in %.1fs%s, quarantined %s", name, manifest["timings"]["seconds"],
             "" if manifest["rows_out"] is None else f", rows out {manifest['rows_out']:,}", manifest["quarantined"])
    return manifest


def run_job(job: JobSpec, stages: list[str] | None = None, force: bool = False) -> dict[str, dict[str, Any]]:
    """Run the job's stages in order (``stages`` limits which; ``force`` re-runs them from scratch)."""
    from embedforge import device
    from embedforge.preflight import preflight

    outputs = plan(job)
    wanted = stages or list(outputs)
    for s in wanted:
        if s not in outputs:
            raise StageFailed(f"stage '{s}' is not in job '{job.name}' (it has: {', '.join(outputs)})")
    preflight(job, f"job '{job.name}'")  # before any stage: missing paths and models fail now, not hours later
    device.set_threads(job.threads)
    results = {}
    for name in outputs:
        if name in wanted:
            results[name] = run_stage(job, name, outputs, force=force)
    return results


def status(job: JobSpec) -> list[dict[str, Any]]:
    """Per stage: done / running (partial) / stale (an older hash finished) / missing, with rows and time."""
    rows = []
    for name, out in plan(job).items():
        manifest = out.manifest() if out.done else {}
        if out.url:
            pattern = run_storage.join(job_url(job) or "", f"{name}-*", SUCCESS)
            others = [u for u in run_storage.glob(pattern) if f"/{name}-{out.hash}/" not in u]
        else:
            others = [p for p in job_dir(job).glob(f"{name}-*") if p != out.dir and (p / SUCCESS).is_file()]
        if out.done:
            state = "done"
        elif failure_path(out).is_file():
            state = "failed"
        elif out.dir.exists():
            state = "partial"
        elif others:
            state = "stale"
        else:
            state = "missing"
        row = {"stage": name, "state": state, "hash": out.hash, "dir": out.location,
               "rows_out": manifest.get("rows_out"), "quarantined": manifest.get("quarantined"),
               "seconds": manifest.get("timings", {}).get("seconds")}
        if state == "failed":
            row["error"] = json.loads(failure_path(out).read_text()).get("error")
        rows.append(row)
    return rows
