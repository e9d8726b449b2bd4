"""Spec fuzzing: generated mutations of the shipped job files through the real CLI (``embedforge validate``, in
process). Every mutation either validates (exit 0) or exits 2 with a one-line-per-problem message naming the
field at fault; none may raise (a traceback). Mutations: type flips, negatives, zeros, huge values, unknown keys
at every level, removed keys, path escapes, duplicate keys, binary garbage, non-UTF-8 bytes, empty files, and
list or scalar roots."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from embedforge.cli import app

REPO = Path(__file__).resolve().parents[2]
JOBS = sorted((REPO / "jobs").glob("*.yaml"))


SLICE = str(REPO / "tests" / "fixtures" / "scifact-slice")
SLICES = {"beir:cranfield": str(REPO / "tests" / "fixtures" / "cranfield-slice")}


def _self_contained(value: Any) -> Any:
    """The shipped jobs with downloadable datasets (``beir:NAME``) replaced by the repository's slice of that
    dataset (the divisions ``datasets split`` makes included), the SciFact slice for any other name."""
    if isinstance(value, dict):
        return {k: _self_contained(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_self_contained(v) for v in value]
    if isinstance(value, str) and value.startswith("beir:"):
        return SLICES.get(value, SLICE)
    return value


BASES = {job.name: _self_contained(yaml.safe_load(job.read_text())) for job in JOBS}


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


FLIPS = [None, True, 0, -1, -4, 10**30, 1.5, float("nan"), "", "text", "../../escape", [], [1, "x"], {},
         {"zz": 1}, "\x00", "🙂" * 3]
ESCAPES = {"name": ["..", ".", "../up", "a/b", ".hidden", "", "x" * 300],
           "run_dir": ["", "\x00"], "glob": ["../*.txt", "/etc/*", "a/../../b", "~/x", ".", "./", "", "["],
           "path": ["/nonexistent/corpus.jsonl", "../../../etc/passwd", "builtin:../x", "", "/dev/zero"]}


COMMAND = typer.main.get_command(app)  # built once: typer's CliRunner rebuilds it per call (0.2 s)


def _cli(args: list[str]) -> tuple[int, str, BaseException | None]:
    """Run the CLI in process; (exit code, stdout + stderr, the exception that escaped or None)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code, exc = COMMAND.main(args, prog_name="embedforge", standalone_mode=False) or 0, None
        except SystemExit as stop:
            code, exc = int(stop.code or 0), None
        except Exception as error:  # noqa: BLE001 - what the test is looking for
            code, exc = 1, error
    return code, out.getvalue(), exc


def _validate(tmp_path: Path, raw: bytes) -> tuple[int, str, BaseException | None]:
    job = tmp_path / "job.yaml"
    job.write_bytes(raw)
    return _cli(["validate", str(job)])


def _check(tmp_path: Path, raw: bytes, names: list[str]) -> None:
    code, output, exc = _validate(tmp_path, raw)
    event(f"exit {code}")
    assert exc is None, f"traceback ({type(exc).__name__}: {exc}) for:\n{raw[:400]!r}"
    assert "Traceback" not in output
    assert code in (0, 2), (code, output)
    if code == 2:
        assert output.startswith("error: ") and str(tmp_path / "job.yaml") in output, output
        if names:
            assert any(n in output for n in names), f"no field of {names} named in:\n{output}"


@st.composite
def mutations(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A mutated job file and the names an error about it must mention (any one of them)."""
    base = BASES[draw(st.sampled_from(sorted(BASES)))]
    data = copy.deepcopy(base)
    kind = draw(st.sampled_from(["flip", "flip", "flip", "unknown_key", "remove", "escape", "duplicate",
                                 "garbage", "root"]))
    paths = _paths(data)
    path = draw(st.sampled_from(paths))
    names = [str(p) for p in path if isinstance(p, str)][-1:]
    if kind == "flip":
        parent = _get(data, path[:-1])
        parent[path[-1]] = draw(st.sampled_from(FLIPS) | st.integers(-(2**70), 2**70) | st.text(max_size=20))
    elif kind == "unknown_key":
        dicts = [p for p in [(), *paths] if isinstance(_get(data, p), dict)]
        where = draw(st.sampled_from(dicts))
        key = draw(st.sampled_from(["zz_unknown", "stage", "Name", "max_token", "sources_"]))
        _get(data, where)[key] = draw(st.sampled_from(FLIPS))
        names = [key]
    elif kind == "remove":
        parent = _get(data, path[:-1])
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
        names = []  # a removed key either has a default or its absence is named by the parent's message
    elif kind == "escape":
        key = draw(st.sampled_from(sorted(ESCAPES)))
        value = draw(st.sampled_from(ESCAPES[key]))
        if key in ("name", "run_dir"):
            data[key] = value
        elif key == "glob":
            data["stages"]["ingest"]["sources"][0].update(path=str(REPO / "docs"), glob=value)
        else:
            data["stages"]["ingest"]["sources"][0]["path"] = value
        names = [key, "sources", "path", "run_dir", "name"]
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    if kind == "duplicate":
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i] if ":" in lines[i] else "name: again"
        text = "\n".join([*lines[: i + 1], line, *lines[i + 1:]]) + "\n"
        return text.encode(), ["duplicate key", "line", "not valid YAML", ":"]
    if kind == "garbage":
        raw = draw(st.binary(min_size=0, max_size=200))
        if draw(st.booleans()):
            raw = text.encode()[: draw(st.integers(0, len(text)))] + raw
        return raw, []
    if kind == "root":
        root = draw(st.sampled_from(["[]", "- a\n- b\n", "42", "'just a string'", "~", "", "\n\n", "{}",
                                     "stages:\n", "stages: []\n", "stages: 3\n", json.dumps([data])]))
        return root.encode(), ["mapping", "empty", "stages", "no stages"]
    return text.encode(), names


@settings(max_examples=160, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(mutation=mutations())
def test_mutated_job_files_validate_or_fail_cleanly(tmp_path: Path, mutation: tuple[bytes, list[str]]) -> None:
    raw, names = mutation
    _check(tmp_path, raw, names)


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_unmutated_jobs_validate(tmp_path: Path, job: Path) -> None:
    raw = yaml.safe_dump(BASES[job.name]).encode()
    code, output, exc = _validate(tmp_path, raw)
    assert exc is None and code == 0, output


BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
                 + ["stages: {chunk: {}}", ""]).encode()


@pytest.mark.parametrize(("text", "expected"), [
    (b"", "empty"),
    (BOMB, "more than 100,000 values"),
    (b"stages: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"stages: " + b"[" * 80 + b"]" * 80 + b"\n", "nested deeper than 64 levels"),
    (b"name: t\n", "no stages"),
    (b"\xff\xfename: t\n", "not UTF-8"),
    (b"name: a\nname: b\nstages: {chunk: {}}\n", "duplicate key 'name' (line 1 and line 2)"),
    (b"name: t\nstages:\n  chunk: {}\n  chunk: {max_tokens: 64}\n", "duplicate key 'chunk' (line 3 and line 4)"),
    (b"name: ..\nstages: {chunk: {}}\n", "name"),
    (b"threads: -4\nstages: {chunk: {}}\n", "threads"),
    (b"device: tpu9\nstages: {chunk: {}}\n", "unknown device 'tpu9'"),
    (b"base_model: no-such-model\nstages: {chunk: {}}\n", "base_model"),
    (b"stages:\n  ingest: {sources: [{path: builtin:adi, glob: /etc/*}]}\n", "sources.0.glob"),
    (b"stages:\n  ingest: {sources: [{path: missing.jsonl}]}\n", "stages.ingest.sources.0.path"),
    (b"stages:\n  ingest: {sources: [{path: /dev/zero, format: jsonl}]}\n", "not a regular file"),
    (b"stages:\n  chunk: {}\n  embed: {dims: [999]}\n", "stages.embed.dims: [999] beyond the dimension"),
    (b"stages:\n  evaluate: {datasets: [builtin:adi], dims: [385]}\n", "stages.evaluate.dims: [385] beyond"),
    (b"stages:\n  evaluate: {datasets: [no/such/dataset]}\n", "stages.evaluate.datasets.0"),
])
def test_each_reported_case_is_one_clear_error(tmp_path: Path, text: bytes, expected: str) -> None:
    code, output, exc = _validate(tmp_path, text)
    assert exc is None and code == 2 and expected in output, output


@pytest.mark.parametrize(("override", "expected"), [
    ("stages.ingest.sources.5.path=x", "index 5 is out of range"),
    ("stages.ingest.sources.first.path=x", "must be a list index"),
    ("stages.chunk.max_tokens=lots", "stages.chunk.max_tokens"),
    ("name.sub=x", "'name' is a str"),
    ("stages.chunk.max_tokens=[unclosed", "not valid YAML"),
])
def test_override_errors_name_the_override(tmp_path: Path, override: str, expected: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: t\nstages:\n  ingest: {sources: [{path: builtin:adi}]}\n  chunk: {}\n")
    code, output, exc = _cli(["validate", str(job), override])
    assert exc is None and code == 2 and expected in output, output


_BOOL = st.booleans()
_COUNT = st.sampled_from([0, 1, 2, 3, 5, 9, 17, 64, 100, 1000, 10**6, 10**9])
SMALL_FIELDS: dict[str, dict[str, st.SearchStrategy]] = {
    "ingest": {"normalize_unicode": _BOOL, "strip_html": _BOOL, "redact_pii": _BOOL, "dedup": _BOOL,
               "min_chars": _COUNT, "max_chars": _COUNT, "max_bad_share": st.floats(0, 1), "shard_rows": _COUNT,
               "progress_every": _COUNT},
    "chunk": {"max_tokens": _COUNT, "overlap_tokens": _COUNT, "min_tokens": _COUNT, "max_chars": _COUNT,
              "max_word_chars": _COUNT, "batch_docs": _COUNT, "tokenizer": st.sampled_from(["base", "minilm"])},
}
RUN_VALUES = [None, True, False, 0, 1, -1, 2, 9, 64, 10**9, 10**30, 0.5, 1.0, "", "x", "base", [], {}]


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stage=st.sampled_from(sorted(SMALL_FIELDS)), data=st.data())
def test_mutated_ingest_and_chunk_settings_run_or_fail_cleanly(tmp_path: Path, stage: str, data: st.DataObject) -> None:
    """The mutations that validate also run: ingest + chunk on a tiny corpus end with exit 0, or with a one-line
    error (exit 1: the stage refused the data, e.g. everything quarantined; exit 2: the spec), never a traceback."""
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh run dir per example (tmp_path is shared by them)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "title": f"Doc {i}", "text": f"Some text {i}. " * (i + 1)})
                              + "\n" for i in range(12)))
    spec: dict[str, Any] = {"name": "fuzz", "run_dir": str(tmp_path / "runs"),
                            "stages": {"ingest": {"sources": [{"path": str(corpus)}]}, "chunk": {"max_tokens": 64}}}
    for _ in range(data.draw(st.integers(1, 3))):
        field = data.draw(st.sampled_from(sorted(SMALL_FIELDS[stage])))
        plausible = SMALL_FIELDS[stage][field]
        spec["stages"][stage][field] = data.draw(plausible | plausible | plausible | st.sampled_from(RUN_VALUES))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    code, output, exc = _cli(["validate", str(job)])
    assert exc is None and code in (0, 2), output
    event(f"validate exit {code}")
    if code == 2:
        return
    code, output, exc = _cli(["run", str(job), "--log-level", "ERROR"])
    event(f"run exit {code}")
    assert exc is None, f"traceback ({type(exc).__name__}: {exc}) running:\n{spec['stages'][stage]}"
    assert code in (0, 1, 2) and "Traceback" not in output, output
    if code:
        assert "error: " in output, output
