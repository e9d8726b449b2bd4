"""benchmarks/drill_resume.py end to end on a tiny ingest + chunk job: two SIGKILLs, resumes, identical outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

JOB = """# embedforge run job.yaml
name: drill
stages:
  ingest:
    sources: [{{path: {source}}}]
    shard_rows: 1000
  chunk:
    max_tokens: 32
"""


@pytest.mark.slow  # the drill (benchmarks/drill_resume.py) end to end; each stage's own kill-and-resume test runs by default
def test_drill_kills_twice_and_outputs_match(tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    with open(corpus, "w") as fh:
        for i in range(30_000):
            words = " ".join(f"w{(i * 7 + j) % 5003}" for j in range(40))
            fh.write(json.dumps({"_id": f"d{i}", "title": f"t{i % 89}", "text": f"document {i}: {words}"}) + "\n")
    job = tmp_path / "job.yaml"
    job.write_text(JOB.format(source=corpus))
    out = tmp_path / "drill.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "drill_resume.py"), str(job), "--kills", "2",
                           "--seed", "3", "--window", "0.5", "--run-root", str(tmp_path / "root"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert "passed 2/2 kills; 2/2 stages match the reference (PASS)" in proc.stdout

    result = json.loads(out.read_text())
    kills = result["kill_records"]
    assert [k["target"] for k in kills] == ["ingest", "chunk"]
    assert all(k["delivered"] and k["passed"] for k in kills)
    assert kills[0]["after_stage"] == "ingest"  # the first kill interrupted ingest, which the next attempt resumed
    assert "ingest resumed" in kills[0]["outcome"] or "killed again" in kills[0]["outcome"]
    comparisons = {c["stage"]: c for c in result["comparisons"]}
    assert set(comparisons) == {"ingest", "chunk"} and all(c["rule"] == "exact" for c in comparisons.values())
    assert comparisons["ingest"]["rows_ref"] == comparisons["ingest"]["rows_drill"] == 30_000
    assert comparisons["chunk"]["rows_ref"] == comparisons["chunk"]["rows_drill"] > 30_000
    shard_checks = [c for c in comparisons["chunk"]["checks"] if c["kind"] == "parquet"]
    assert len(shard_checks) == 30 and all("order-defined" in c["detail"] for c in shard_checks)
    assert result["attempts"] == 4  # reference, killed, killed, final resume
