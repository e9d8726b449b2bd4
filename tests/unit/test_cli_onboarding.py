"""First steps with the CLI: --version, the job spec's JSON Schema, readable ``validate --explain``, quiet
third-party libraries unless -v."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from embedforge import __version__
from embedforge.commands.schema import job_schema
from embedforge.spec import type_name

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.yaml"))


def test_version(cli) -> None:
    assert cli("--version").stdout.strip() == f"embedforge {__version__}"
    assert cli("-V").stdout.strip() == f"embedforge {__version__}"


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_shipped_jobs_satisfy_the_schema(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), job_schema())


def test_schema_catches_what_validate_catches(cli, tmp_path: Path) -> None:
    schema = json.loads(cli("schema").stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["properties"]["stages"]["properties"]) >= {"ingest", "chunk", "train", "evaluate", "embed"}
    chunk = schema["$defs"]["ChunkConfig"]["properties"]["max_tokens"]
    assert chunk["type"] == "integer" and "tokens" in chunk["description"].lower()  # field docstrings travel
    job = {"stages": {"ingest": {"sources": [{"path": "builtin:adi"}]}, "chunk": {"max_tokenz": 3}}}
    with pytest.raises(jsonschema.ValidationError, match="max_tokenz"):
        jsonschema.validate(job, schema)
    out = tmp_path / "schema.json"
    cli("schema", "--out", str(out))
    assert json.loads(out.read_text()) == schema


def test_explain_shows_readable_types(cli) -> None:
    proc = cli("validate", "jobs/quickstart.yaml", "--explain")
    text = proc.stdout + proc.stderr
    assert "<class" not in text and "typing." not in text and "PydanticUndefined" not in text
    assert "normalize_unicode: bool = true" in text
    assert "sources: list[SourceConfig] = []" in text and "path: str = (required)" in text
    assert type_name(int | None) == "int | None"


def test_third_party_noise_is_off_unless_verbose() -> None:
    probe = ("import os, sys; from embedforge.cli import app; sys.argv = ['embedforge', *sys.argv[1:], 'status', 'x'];\n"
             "try: app()\nexcept SystemExit: pass\n"
             "print(os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS'), os.environ.get('TQDM_DISABLE'))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")}
    quiet = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, env=env)
    loud = subprocess.run([sys.executable, "-P", "-c", probe, "-v"], capture_output=True, text=True, env=env)
    assert quiet.stdout.split()[-2:] == ["1", "1"]
    assert loud.stdout.split()[-2:] == ["None", "None"]


def test_headline_flags_a_worse_tuned_model() -> None:
    from embedforge.evaluation.report import headline

    rows = [{"dataset": "d", "model": m, "dim": dim, "quantization": q, "ndcg_at_10": v}
            for m, dim, q, v in [("base", 384, "none", 0.60), ("tuned", 384, "none", 0.58), ("base", 96, "none", 0.50),
                                 ("tuned", 96, "none", 0.55), ("tuned", 96, "int8", 0.10), ("bm25", None, "none", 0.7)]]
    assert [(r["dim"], r["worse"], round(r["delta"], 4)) for r in headline(rows)] == [(384, True, -0.02), (96, False, 0.05)]


def test_run_ends_with_the_headline_numbers(cli, tmp_path: Path, minilm_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(f"name: head\nrun_dir: {tmp_path / 'runs'}\nstages:\n  evaluate:\n    datasets: [builtin:adi]\n"
                   f"    models: [base, 'tuned={minilm_path}']\n    dims: [384, 96]\n    quantizations: [none]\n"
                   "    bm25: false\n    heldout: false\n    latency: false\n    n_resamples: 200\n")
    proc = cli("run", str(job))
    text = proc.stdout + proc.stderr
    assert "tuned nDCG@10" in text and "+0.0000" in text and "tuned is worse" not in text
    assert "None" not in text


def _commands():
    import typer

    from embedforge.cli import app

    def walk(command, name: str):
        if hasattr(command, "commands"):  # a group
            for sub_name, sub in command.commands.items():
                yield from walk(sub, f"{name} {sub_name}".strip())
        else:
            yield name, command

    return list(walk(typer.main.get_command(app), ""))


def test_every_command_that_writes_to_out_takes_dash_o() -> None:
    with_out = {name: p for name, cmd in _commands() for p in cmd.params if "--out" in p.opts}
    assert {"evaluate", "bench", "drift", "embed", "init", "schema", "vocab train"} <= set(with_out)
    assert {name for name, p in with_out.items() if "-o" not in p.opts} == set()


def test_a_short_flag_means_the_same_option_in_every_command() -> None:
    meaning: dict[str, set[str]] = {}
    for _name, cmd in _commands():
        for p in cmd.params:
            longs = [o for o in p.opts if o.startswith("--")]
            for short in (o for o in p.opts if len(o) == 2 and o.startswith("-")):
                meaning.setdefault(short, set()).add(longs[0] if longs else short)
    assert meaning["-m"] <= {"--model", "--base-model"}, meaning["-m"]  # push's commit message has no -m
    assert meaning["-d"] <= {"--dims", "--dim"} and meaning["-o"] == {"--out"} and meaning["-c"] == {"--corpus"}
    flagged = {name for name, cmd in _commands() for p in cmd.params if "-m" in p.opts}
    assert {"embed", "evaluate", "search", "init", "vocab analyze", "vocab train", "vocab extend"} <= flagged
    assert {short for short, longs in meaning.items() if len(longs) > 1} <= {"-m", "-d"}
