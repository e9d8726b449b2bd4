"""Kill-and-resume drill: a job run uninterrupted, then again with N SIGKILLs and resumes; the outputs compared.

    nice -n 10 .venv/bin/python benchmarks/drill_resume.py jobs/quickstart.yaml --kills 20

1. **Reference**: ``embedforge run JOB run_dir=<root>/reference/runs`` once, uninterrupted, timing every stage
   from the runner's log lines.
2. **Drill**: the same job into ``<root>/drill/runs``. Kill ``k`` targets a stage and a fraction of its
   reference duration: every stage gets one kill (when N allows) and the rest are shared in proportion to the
   stages' durations; the fraction is uniform over ``[0, --window)``, less for a stage's later kills (seeded RNG),
   counted from the ``stage X: running`` line of the attempt that runs it. At that moment the whole process group
   gets SIGKILL (stages spawn subprocesses: vLLM's engine core, data loader workers) and the drill waits until no
   process of the group is left. The next attempt (``embedforge run JOB`` again, same run dir) is the resume;
   after the last kill a final resume runs to completion. A kill that overruns its stage lands in a later one; a
   target stage already finished moves to the first unfinished one (same fraction of its duration); a kill
   still pending when the job's last stage is done is delivered then ("clipped") rather than missed.
3. **Compare** every stage's directory with the reference (see ``benchmarks/drill_compare.py``): Parquet row
   counts and order-defined content hashes, JSON without timing fields, bytes of everything else; no temp files,
   torn shards or duplicated rows; ``_SUCCESS`` and ``manifest.json`` everywhere.

The rule per stage is ``exact`` unless the train stage's weights differ from the reference's; then train and the
stages that read its model (evaluate, embed) are compared by ``tolerance``: ids, row counts, configs and step
counts exact, metrics within ``--metric-tol`` and vectors/weights within ``--vector-tol``/``--weight-tol``, and
the output says so. Each run gets its own embedding cache (``EMBEDFORGE_CACHE`` with the model folders of the
user's cache linked in), so the drill recomputes vectors rather than reading the reference's.

Prints a table per kill and per stage and ``passed K/N``; writes JSON (device, versions, git SHA, timestamp) to
``--out``; exits 1 on any failed kill or mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drill_compare import StageComparison, compare_stage, leftovers  # noqa: E402

from embedforge.runner import git_sha, library_versions, plan
from embedforge.spec import load_spec

RUNNING = re.compile(r"stage (\S+): running → (\S+)( \(resuming\))?")
DONE = re.compile(r"stage (\S+): done in ([\d.]+)s")
SKIPPED = re.compile(r"stage (\S+): done \(.*\), skipped")
RESUME_NOTES = (re.compile(r"train: resuming from (\S+)"), re.compile(r"cached result reused"),
                re.compile(r"removing incomplete checkpoint"))
MODEL_STAGES = ("evaluate", "embed")
"""Stages whose outputs depend on the train stage's weights."""


# ---------------------------------------------------------------- one `embedforge run`


@dataclass
class Attempt:
    """One ``embedforge run`` process: its log lines with the time each was read."""

    index: int
    proc: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str]] = field(default_factory=list)
    killed: bool = False

    @classmethod
    def start(cls, index: int, cmd: list[str], env: dict[str, str], log_path: Path) -> Attempt:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)  # its own process group, killed as one
        attempt = cls(index, proc, log_path)
        threading.Thread(target=attempt._read, daemon=True).start()
        return attempt

    def _read(self) -> None:
        with open(self.log_path, "w", encoding="utf-8") as log:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                log.write(line)
                log.flush()

    def started_stage(self, stage: str) -> float | None:
        """When this attempt logged ``stage <stage>: running`` (monotonic), or None."""
        return next((t for t, line in list(self.lines) if (m := RUNNING.search(line)) and m.group(1) == stage), None)

    def finished(self, stage: str) -> bool:
        """This attempt logged that ``stage`` is done (finished or skipped)."""
        return any(((m := DONE.search(line)) or (m := SKIPPED.search(line))) and m.group(1) == stage
                   for _, line in list(self.lines))

    def current_stage(self) -> str | None:
        """The stage of the last ``running`` line."""
        found = [m.group(1) for _, line in list(self.lines) if (m := RUNNING.search(line))]
        return found[-1] if found else None

    def kill(self) -> None:
        """SIGKILL the whole process group and wait until none of its processes is left."""
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.killed = True
        self.proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"processes of group {pgid} still alive 30 s after SIGKILL")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        time.sleep(0.1)  # let the reader thread drain the pipe
        return code

    def summary(self) -> dict[str, Any]:
        """What the attempt did: stages skipped, resumed, started, finished, and resume notes (checkpoint, cache)."""
        out: dict[str, Any] = {"skipped": [], "resumed": [], "started": [], "done": [], "notes": []}
        for _, line in self.lines:
            if m := SKIPPED.search(line):
                out["skipped"].append(m.group(1))
            elif m := RUNNING.search(line):
                out["resumed" if m.group(3) else "started"].append(m.group(1))
            elif m := DONE.search(line):
                out["done"].append(m.group(1))
            for pattern in RESUME_NOTES:
                if pattern.search(line):
                    out["notes"].append(line.split(" INFO ")[-1].split(" WARNING ")[-1][:120])
        return out

    def tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:])


def timeline(attempt: Attempt) -> dict[str, dict[str, float]]:
    """Per stage of an uninterrupted attempt: start and end (seconds after the process started), duration."""
    out: dict[str, dict[str, float]] = {}
    for t, line in attempt.lines:
        if m := RUNNING.search(line):
            out[m.group(1)] = {"start": t - attempt.started}
        elif (m := DONE.search(line)) and m.group(1) in out:
            entry = out[m.group(1)]
            entry["end"] = t - attempt.started
            entry["seconds"] = entry["end"] - entry["start"]
    return out


# ---------------------------------------------------------------- the schedule


def schedule(durations: dict[str, float], kills: int, rng: random.Random,
             window: float = 0.9) -> list[tuple[str, float]]:
    """``kills`` (stage, fraction of the stage's duration) targets in stage order.

    Every stage gets one kill first (the longest stages when there are fewer kills than stages), the rest go to
    the stages in proportion to their reference durations (largest remainder). The ``j``-th of ``c`` kills in a
    stage is at a fraction uniform over ``[0, window * (c - j) / c)`` of its duration: each earlier kill is assumed
    to have left part of the stage done (true of shard-resumed stages, early-biased for stages that restart), and
    ``window`` < 1 keeps load variance from pushing a kill past the end of the job.
    """
    stages = list(durations)
    total = sum(durations.values()) or 1.0
    if kills < len(stages):
        counts = dict.fromkeys(stages, 0)
        for s in sorted(stages, key=lambda s: -durations[s])[:kills]:
            counts[s] = 1
    else:
        counts = dict.fromkeys(stages, 1)
        extra = kills - len(stages)
        shares = {s: extra * durations[s] / total for s in stages}
        for s in stages:
            counts[s] += int(shares[s])
        left = extra - sum(int(v) for v in shares.values())
        for s in sorted(stages, key=lambda s: -(shares[s] - int(shares[s])))[:left]:
            counts[s] += 1
    return [(s, rng.uniform(0.0, window * (c - j) / c)) for s, c in counts.items() for j in range(c)]


# ---------------------------------------------------------------- the drill


class Drill:
    """Runs the reference and the drilled run of one job under ``root`` and compares them."""

    def __init__(self, job: Path, overrides: list[str], root: Path, timeout: float,
                 reference: Path | None = None) -> None:
        self.job, self.overrides, self.root, self.timeout = job, overrides, root, timeout
        self.homes = {"reference": (reference or root / "reference").resolve(), "drill": (root / "drill").resolve()}
        self.reuse_only = reference is not None
        self.attempts = 0

    def run_dir(self, which: str) -> Path:
        return self.homes[which] / "runs"

    def outputs(self, which: str) -> dict[str, Any]:
        return plan(load_spec(self.job, [*self.overrides, f"run_dir={self.run_dir(which)}"]))

    def env(self, which: str) -> dict[str, str]:
        """The user's environment with a cache of this run's own (model folders linked in, embeddings not)."""
        from embedforge.encoding.cache import default_root

        cache = self.homes[which] / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        shared = default_root()
        if shared.is_dir():
            for entry in shared.iterdir():
                link = cache / entry.name
                if entry.name != "embeddings" and not link.exists():
                    link.symlink_to(entry.resolve())
        return {**os.environ, "EMBEDFORGE_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}

    def start(self, which: str) -> Attempt:
        self.attempts += 1
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-P", "-m", "embedforge.cli", "run", str(self.job), *self.overrides,
               f"run_dir={self.run_dir(which)}", "--log-level", "INFO"]
        return Attempt.start(self.attempts, cmd, self.env(which), logs / f"{which}-{self.attempts:02d}.log")

    def reference(self) -> dict[str, dict[str, float]]:
        """Run (or reuse) the uninterrupted reference; returns its per-stage timeline."""
        saved = self.homes["reference"] / "timeline.json"
        outputs = self.outputs("reference")
        if saved.is_file() and all(o.done for o in outputs.values()):
            print(f"reference: reusing the finished run in {self.run_dir('reference')}", flush=True)
            return json.loads(saved.read_text())
        if self.reuse_only:
            raise SystemExit(f"no finished reference with a timeline in {self.homes['reference']} (--reference and "
                             "--compare-only never run or delete one)")
        if self.run_dir("reference").exists():
            shutil.rmtree(self.run_dir("reference"))
        print(f"reference: embedforge run {self.job} (uninterrupted) → {self.run_dir('reference')}", flush=True)
        attempt = self.start("reference")
        code = attempt.wait(self.timeout)
        if code != 0:
            raise SystemExit(f"the reference run failed (exit {code}):\n{attempt.tail()}")
        stages = timeline(attempt)
        missing = [s for s in outputs if s not in stages]
        if missing:
            raise SystemExit(f"the reference run skipped {missing} (finished elsewhere?); use a fresh --run-root")
        saved.write_text(json.dumps(stages, indent=2) + "\n")
        return stages

    def state(self) -> dict[str, Any]:
        """The drilled run's state right after a kill: first unfinished stage, its shards, checkpoints, temp files."""
        outputs = self.outputs("drill")
        todo = next((o for o in outputs.values() if not o.done), None)
        if todo is None:
            return {"stage": None, "detail": "all stages finished"}
        d = todo.dir
        parts = []
        if (d / "shards").is_dir():
            parts.append(f"{len([p for p in (d / 'shards').glob('*.parquet') if not p.name.startswith('.')])} shards")
        if (d / "checkpoints").is_dir():
            done = sorted(p.name for p in (d / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file())
            parts.append(f"checkpoints {','.join(n.split('-')[1] for n in done) or 'none'}")
        if (d / "partial").is_dir():
            parts.append(f"{len(list((d / 'partial').glob('*.json')))} cached results")
        temp = leftovers(d) if d.is_dir() else []
        if temp:
            parts.append(f"temp: {len(temp)}")
        if (d / "model").is_dir():
            parts.append("model saved")
        return {"stage": todo.name, "detail": ", ".join(parts) or ("empty dir" if d.is_dir() else "not started"),
                "temp_files": temp}

    def run(self, targets: list[tuple[str, float]], durations: dict[str, float]
            ) -> tuple[list[dict[str, Any]], Attempt | None, int]:
        """Deliver the kills (``(stage, fraction of its duration)``); returns the kill records, the final attempt and
        its exit code."""
        if self.run_dir("drill").exists():
            shutil.rmtree(self.run_dir("drill"))
        order = list(self.outputs("drill"))
        records: list[dict[str, Any]] = []
        attempt: Attempt | None = None
        t0 = time.monotonic()
        for k, (target, fraction) in enumerate(targets, 1):
            outputs = self.outputs("drill")
            unfinished = [s for s in order if not outputs[s].done]
            if not unfinished:
                records.append({"kill": k, "target": target, "delivered": False, "outcome": "job already finished"})
                continue
            aimed = target if target in unfinished else unfinished[0]
            offset = fraction * durations[aimed]
            if attempt is None or attempt.proc.poll() is not None:
                attempt = self.start("drill")
                if records and records[-1].get("delivered"):
                    records[-1]["resume_attempt"] = attempt.index
            record: dict[str, Any] = {"kill": k, "target": target, "aimed": aimed, "fraction": round(fraction, 4),
                                      "offset_s": round(offset, 2), "attempt": attempt.index}
            while (begun := attempt.started_stage(aimed)) is None and attempt.proc.poll() is None:
                if order.index(attempt.current_stage() or order[0]) > order.index(aimed):
                    break  # a stage after the target is already running: kill now
                time.sleep(0.02)
            at = (begun or time.monotonic()) + offset
            while time.monotonic() < at and attempt.proc.poll() is None:
                if attempt.finished(order[-1]):  # the job is about to exit: kill now rather than miss
                    record["clipped"] = f"at the end of the job ({offset:.1f} s planned)"
                    break
                time.sleep(min(0.02, max(at - time.monotonic(), 0)))
            if attempt.proc.poll() is not None:
                code = attempt.wait(10)
                record.update(delivered=False, outcome=f"attempt ended first (exit {code})")
                if code != 0:
                    record["log_tail"] = attempt.tail()
                records.append(record)
                continue
            running = attempt.current_stage()
            attempt.kill()
            after = self.state()
            record.update(delivered=True, at_s=round(time.monotonic() - t0, 1),
                          in_attempt_s=round(time.monotonic() - attempt.started, 1), running=running,
                          after_stage=after["stage"], after_detail=after["detail"],
                          temp_files=after.get("temp_files", []))
            record["summary"] = attempt.summary()
            records.append(record)
            print(f"kill {k:2d}/{len(targets)}: {record['at_s']:7.1f}s  {running or '(start-up)':<14} "
                  f"→ {record['after_stage'] or '-'}: {record['after_detail']}", flush=True)
        final = attempt if attempt is not None and attempt.proc.poll() is None else self.start("drill")
        if records and records[-1].get("delivered") and "resume_attempt" not in records[-1]:
            records[-1]["resume_attempt"] = final.index
        code = final.wait(self.timeout)
        self._outcomes(records, final, code)
        return records, final, code

    def _outcomes(self, records: list[dict[str, Any]], final: Attempt, code: int) -> None:
        """Each delivered kill's outcome: what the next attempt did with the stage the kill interrupted."""
        logs = {int(p.stem.split("-")[1]): p for p in (self.root / "logs").glob("drill-*.log")}
        for i, r in enumerate(records):
            if not r.get("delivered"):
                r["passed"] = False
                continue
            nxt = r.get("resume_attempt")
            lines = logs[nxt].read_text(encoding="utf-8").splitlines() if nxt in logs else []
            stage = r.get("after_stage")
            resumed = any((m := RUNNING.search(line)) and m.group(1) == stage for line in lines)
            finished = any((m := DONE.search(line)) and m.group(1) == stage for line in lines)
            notes = [n for line in lines for p in RESUME_NOTES if (m := p.search(line)) and (n := m.group(0))]
            killed_again = any(x.get("attempt") == nxt and x.get("delivered") for x in records[i + 1:])
            failed = nxt == final.index and code != 0
            if stage is None:
                outcome = "all stages already finished"
            elif failed:
                outcome = f"resume FAILED (exit {code})"
            elif finished:
                outcome = f"{stage} resumed and finished" + (f" ({'; '.join(dict.fromkeys(notes))})" if notes else "")
            elif killed_again:
                outcome = f"{stage} {'resumed' if resumed else 'not reached'}, killed again"
            else:
                outcome = f"{stage} not completed"
            r["outcome"] = outcome
            r["passed"] = not failed and (stage is None or finished or killed_again)


# ---------------------------------------------------------------- comparison and report


def rules(ref: dict[str, Any], drill: dict[str, Any]) -> tuple[dict[str, str], str]:
    """The comparison rule of each stage and why: exact, unless the trained weights differ."""
    from drill_compare import compare_binary

    out = dict.fromkeys(ref, "exact")
    if "train" not in ref:
        return out, "no train stage: every stage is compared exactly"
    weights = "model/model.safetensors"
    a, b = ref["train"].dir / weights, drill["train"].dir / weights
    if not (a.is_file() and b.is_file()):
        return out, "train wrote no model.safetensors in one of the runs (compared exactly; will fail)"
    check = compare_binary(a, b, weights, None)
    if check.ok:
        return out, ("train is bit-deterministic across kill + resume here (identical model.safetensors): train, "
                     "evaluate and embed are compared exactly")
    for s in ("train", *MODEL_STAGES):
        if s in out:
            out[s] = "tolerance"
    return out, (f"the trained weights differ from the reference ({check.detail}): train, evaluate and embed are "
                 "compared by ids, row counts, configs and step counts exactly and by values within tolerance")


def compare(drill: Drill, args: argparse.Namespace) -> tuple[list[StageComparison], str]:
    ref, got = drill.outputs("reference"), drill.outputs("drill")
    stage_rules, why = rules(ref, got)
    roots = tuple(str(h) for h in drill.homes.values())
    results = []
    for name in ref:
        if not got[name].dir.is_dir():
            c = StageComparison(name, stage_rules[name])
            from drill_compare import Check

            c.checks.append(Check(str(got[name].dir), "dir", False, "stage directory missing in the drilled run"))
            results.append(c)
            continue
        results.append(compare_stage(name, ref[name].dir, got[name].dir, stage_rules[name], roots,
                                     atol=args.metric_tol, vector_atol=args.vector_tol,
                                     weights_atol=args.weight_tol))
    return results, why


def print_tables(records: list[dict[str, Any]], stages: list[StageComparison], why: str) -> None:
    print("\nkills")
    print(f"{'#':>3} {'at s':>7} {'in run s':>8}  {'target':<14} {'running':<14} {'state after the kill':<44} outcome")
    for r in records:
        if not r.get("delivered"):
            print(f"{r['kill']:>3} {'-':>7} {'-':>8}  {r['target']:<14} {'-':<14} {'not delivered':<44} {r['outcome']}")
            continue
        state = f"{r.get('after_stage') or '-'}: {r.get('after_detail', '')}"
        print(f"{r['kill']:>3} {r['at_s']:>7.1f} {r['in_attempt_s']:>8.1f}  {r['aimed']:<14} {r['running'] or '(start-up)':<14} "
              f"{state[:44]:<44} {r.get('outcome', '')}{' [clipped: ' + r['clipped'] + ']' if r.get('clipped') else ''}")
    print(f"\nstages — {why}")
    print(f"{'stage':<14} {'rule':<10} {'rows ref':>9} {'rows drill':>10} {'files':>6} {'match':>6}  notes")
    for s in stages:
        ref, got = s.rows
        fails = s.failures()
        notes = "; ".join(f"{c.path}: {c.detail}" for c in fails[:3]) or "; ".join(
            f"{n} skipped ({why.split(':')[0]})" for why, n in s.skipped.items())
        print(f"{s.stage:<14} {s.rule:<10} {str(ref):>9} {str(got):>10} {len(s.checks):>6} {'yes' if s.ok else 'NO':>6}  {notes[:110]}")


def _device(args: argparse.Namespace) -> str:
    from embedforge import device as dev

    return str(dev.device(load_spec(args.job, args.overrides).device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides passed to every `embedforge run`")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--run-root", type=Path, default=None,
                        help="where the reference and drilled runs go (default: a temp dir, removed after a pass)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a finished reference (a `<run-root>/reference` of an earlier drill of the same job) to reuse")
    parser.add_argument("--compare-only", action="store_true",
                        help="compare the finished runs under --run-root again, without running anything")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/drill_resume.json"))
    parser.add_argument("--window", type=float, default=0.9,
                        help="kill moments are drawn over this fraction of a stage's expected (remaining) time")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one attempt may take")
    parser.add_argument("--metric-tol", type=float, default=0.02, help="tolerance on metrics (tolerance rule)")
    parser.add_argument("--vector-tol", type=float, default=0.05, help="tolerance on vector components")
    parser.add_argument("--weight-tol", type=float, default=0.05, help="tolerance on model weights")
    args = parser.parse_args()
    if any(o.startswith("run_dir=") for o in args.overrides):
        parser.error("run_dir is set by the drill (use --run-root)")
    if args.kills < 0:
        parser.error("--kills must be ≥ 0")
    if args.compare_only and args.run_root is None:
        parser.error("--compare-only needs the --run-root of the runs to compare")
    temp_root = args.run_root is None
    root = Path(tempfile.mkdtemp(prefix="drill-")) if temp_root else args.run_root.resolve()
    drill = Drill(args.job, args.overrides, root, args.timeout, args.reference.resolve() if args.reference else None)
    drill.reuse_only |= args.compare_only
    started = time.time()

    ref_timeline = drill.reference()
    durations = {s: ref_timeline[s]["seconds"] for s in drill.outputs("reference")}
    targets = schedule(durations, args.kills, random.Random(args.seed), args.window)
    print(f"reference: {sum(durations.values()):.1f} s in stages ("
          + ", ".join(f"{s} {d:.1f}" for s, d in durations.items()) + f"); {args.kills} kills, seed {args.seed}",
          flush=True)
    if args.compare_only:
        saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
        records, final, code = saved.get("kill_records", []), None, saved.get("final_exit_code", 0)
    else:
        records, final, code = drill.run(targets, durations)
    if code != 0:
        print(f"the final resume failed (exit {code}):\n{final.tail() if final else ''}", flush=True)
    stages, why = compare(drill, args)
    print_tables(records, stages, why)

    passed = sum(1 for r in records if r.get("passed"))
    stages_ok = sum(1 for s in stages if s.ok)
    ok = passed == args.kills and stages_ok == len(stages) and code == 0
    print(f"\npassed {passed}/{args.kills} kills; {stages_ok}/{len(stages)} stages match the reference "
          f"({'PASS' if ok else 'FAIL'})")
    result = {
        "benchmark": "drill_resume", "job": str(args.job), "overrides": args.overrides, "kills": args.kills,
        "seed": args.seed, "window": args.window, "passed": passed, "stages_matched": stages_ok, "stages": len(stages), "ok": ok,
        "final_exit_code": code, "rule_reason": why, "reference_timeline": ref_timeline,
        "attempts": drill.attempts, "kill_records": records, "comparisons": [s.as_dict() for s in stages],
        "run_root": str(root) if not (temp_root and ok) else None, "seconds": round(time.time() - started, 1),
        "device": _device(args), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "versions": library_versions(),
        "git": git_sha(), "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}" + (f"; runs kept in {root}" if result["run_root"] else ""))
    if temp_root and ok:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
