"""Progress lines: one rate rule, figures the caller measured shown as given, ``cached`` instead of ``0 tokens/s``,
and no ``None`` in the run and status tables."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from embedforge.progress import Tracker, per_second, rate_text


@pytest.fixture
def lines() -> list[str]:
    """The messages the (non-TTY) tracker logs."""
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    logger = logging.getLogger("embedforge")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield got
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_rate_text_hides_zero_rates_and_says_cached() -> None:
    assert rate_text({"output_tokens_per_s": 64.23}) == "64.23 output tokens/s"
    assert rate_text({"docs_per_s": 1234.5, "tokens_per_s": 0.0}) == "1,234.5 docs/s"
    assert rate_text({"docs_per_s": 12.5, "tokens_per_s": 0.0}, cached=True) == "12.5 docs/s  cached"
    assert rate_text({"tokens_per_s": 10.0}, cached=True) == "10.0 tokens/s"  # partly cached: the real rate
    assert per_second(7, 2.0) == 3.5 and per_second(1, 3.0, 3) == 0.333


def test_everything_from_the_cache_reads_cached(lines: list[str]) -> None:
    tracker = Tracker(None, None, "embed", "docs", total=4)
    tracker.advance(2, cached=2, tokens=0)
    tracker.advance(2, cached=2, tokens=0)
    assert lines and lines[-1].startswith("embed: 4/4 docs") and lines[-1].endswith("cached"), lines
    assert "tokens/s" not in lines[-1]


def test_measured_rate_is_shown_as_given(lines: list[str]) -> None:
    """A stage passes its manifest's figure; the log line prints that number, not the tracker's own rate."""
    tracker = Tracker(None, None, "generate", "chunks", total=3)
    tracker.advance(1, rates={"output_tokens_per_s": 10.5})
    tracker.advance(2, rates={"output_tokens_per_s": 64.23})
    assert lines[-1].endswith(" 64.23 output tokens/s"), lines
    assert "10.5" not in lines[-1]


def test_no_none_in_the_run_and_status_tables(tmp_path: Path, cli) -> None:  # noqa: ANN001
    """analyze_vocab writes no row shards (rows out is empty); the tables print a dash, not ``None``."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "tables", "run_dir": str(tmp_path / "runs"), "device": "cpu",
                                   "base_model": "all-MiniLM-L6-v2",
                                   "stages": {"ingest": {"sources": [{"path": "builtin:adi"}]}, "analyze_vocab": {}}}))

    def out(*args: str) -> str:
        proc = cli(*args)
        return proc.stdout + proc.stderr

    before = out("status", str(job))
    assert "missing" in before and "None" not in before, before
    run = out("run", str(job))
    [manifest] = (tmp_path / "runs" / "tables").glob("analyze_vocab-*/manifest.json")
    assert json.loads(manifest.read_text())["rows_out"] is None  # the case the table must print as a dash
    assert "rows out" in run and "analyze_vocab" in run and "None" not in run, run
    after = out("status", str(job))
    assert after.count("│ done") == 2 and "None" not in after, after


def test_log_level_is_read_in_any_case_and_a_wrong_one_is_a_one_line_error(capsys: pytest.CaptureFixture) -> None:
    import typer

    from embedforge.progress import setup_logging

    setup_logging("debug")
    assert logging.getLogger("embedforge").level == logging.DEBUG
    setup_logging("INFO")
    assert logging.getLogger("embedforge").level == logging.INFO
    with pytest.raises(typer.Exit) as exc:
        setup_logging("loud")
    assert exc.value.exit_code == 2
    assert "'loud' is not one of debug, info, warning, error" in capsys.readouterr().err
