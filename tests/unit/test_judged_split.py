"""One set of judged queries divided into a development part and a held-out part (``embedforge datasets split``),
and the pre-flight check that a job never evaluates on the queries that chose its checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from embedforge.data.beir import BeirFormatError, load_beir, load_judged, load_qrels, split_judged
from embedforge.preflight import preflight
from embedforge.spec import SpecError, validate_dict


@pytest.fixture
def cranfield(tmp_path: Path, cranfield_slice: Path) -> Path:
    return Path(shutil.copytree(cranfield_slice, tmp_path / "cranfield-slice"))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_split_divides_the_judged_queries_and_copies_their_lines(cranfield: Path) -> None:
    out = split_judged(cranfield, "test", dev_share=0.25, seed=0)
    judged = set(load_qrels(cranfield / "qrels" / "test.tsv"))
    dev = set(load_qrels(cranfield / "qrels" / "test-dev.tsv"))
    heldout = set(load_qrels(cranfield / "qrels" / "test-heldout.tsv"))
    assert dev | heldout == judged and not dev & heldout
    assert len(dev) == out["dev_queries"] == round(0.25 * len(judged)) and out["heldout_queries"] == len(heldout)
    original = _lines(cranfield / "qrels" / "test.tsv")
    dev_lines, heldout_lines = _lines(cranfield / "qrels" / "test-dev.tsv"), _lines(cranfield / "qrels" / "test-heldout.tsv")
    assert dev_lines[0] == heldout_lines[0] == original[0]  # the header
    assert sorted(dev_lines[1:] + heldout_lines[1:]) == sorted(line for line in original[1:] if line.strip())
    # both parts load like any split: the evaluate stage reads one, the train stage the other
    assert set(load_beir(cranfield, "test-heldout").query_ids) == heldout
    assert set(load_judged(cranfield, "test-dev")[0]) == dev


def test_split_depends_on_the_seed_and_ids_only(cranfield: Path) -> None:
    split_judged(cranfield, "test", seed=0)
    first = _lines(cranfield / "qrels" / "test-dev.tsv")
    split_judged(cranfield, "test", seed=0)
    assert _lines(cranfield / "qrels" / "test-dev.tsv") == first
    divisions = set()
    for seed in (0, 1, 2, 3):
        split_judged(cranfield, "test", seed=seed)
        divisions.add(frozenset(load_qrels(cranfield / "qrels" / "test-dev.tsv")))
    assert len(divisions) > 1  # another seed, another division (of the same size)


def test_split_refuses_bad_input(cranfield: Path) -> None:
    with pytest.raises(ValueError, match="dev_share must be between 0 and 1"):
        split_judged(cranfield, "test", dev_share=1.0)
    with pytest.raises(BeirFormatError, match="missing qrels/train.tsv"):
        split_judged(cranfield, "train")
    (cranfield / "qrels" / "one.tsv").write_text("query-id\tcorpus-id\tscore\n1\t2\t1\n")
    with pytest.raises(BeirFormatError, match="at least 2 are needed"):
        split_judged(cranfield, "one")


def test_split_command(cli, cranfield: Path) -> None:
    proc = cli("datasets", "split", str(cranfield), "--dev-share", "0.5")
    assert proc.returncode == 0, proc.stderr
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "in qrels/test-dev.tsv" in said and "evaluate.split: test-heldout" in said
    bad = cli("datasets", "split", str(cranfield), "--split", "nope", check=False)
    assert bad.returncode != 0 and "missing qrels/nope.tsv" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


def _job(dataset: Path, judged_split: str, eval_split: str) -> dict:
    return {"name": "j", "base_model": "all-MiniLM-L6-v2", "stages": {
        "train": {"judged_queries": str(dataset), "judged_split": judged_split, "validation": "judged"},
        "evaluate": {"datasets": [str(dataset)], "split": eval_split, "models": ["base", "train"]}}}


def test_preflight_refuses_to_evaluate_on_the_queries_that_choose_the_checkpoint(cranfield: Path) -> None:
    with pytest.raises(SpecError, match=r"stages\.train\.judged_split: \d+ of the queries that evaluate measures") \
            as info:
        preflight(validate_dict(_job(cranfield, "test", "test")))
    assert "embedforge datasets split" in str(info.value)
    split_judged(cranfield, "test")
    preflight(validate_dict(_job(cranfield, "test-dev", "test-heldout")))  # disjoint: nothing to say
    with pytest.raises(SpecError, match=r"stages\.train\.judged_queries: .* lacks qrels/dev.tsv"):
        preflight(validate_dict(_job(cranfield, "dev", "test-heldout")))
