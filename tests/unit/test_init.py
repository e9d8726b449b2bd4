"""``embedforge init``: a valid, commented job spec sized to the corpus and the machine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from embedforge.commands.init import CorpusStats, Machine, render
from embedforge.data.beir import load_qrels
from embedforge.spec import load_spec, validate_dict


def test_init_writes_a_valid_job_for_the_corpus(cli, tmp_path: Path, scifact_slice: Path) -> None:
    out = tmp_path / "mine.yaml"
    proc = cli("init", "--corpus", str(scifact_slice), "--eval", "builtin:adi", "-o", str(out))
    assert "218 documents" in proc.stdout + proc.stderr
    spec = load_spec(out)
    text = out.read_text()
    assert text.startswith(f"# embedforge run {out}\n") and "# Written by `embedforge init` for 218 documents" in text
    assert spec.name == "mine" and [s.path for s in spec.stages["ingest"].sources] == [str(scifact_slice)]
    assert spec.stages["evaluate"].datasets == ["builtin:adi"]
    assert spec.stages["train"].matryoshka_dims == [384, 192, 96, 48]  # from the base model's pooling config
    cli("validate", str(out))

    again = cli("init", "--corpus", str(scifact_slice), "-o", str(out), check=False)
    assert again.returncode == 2 and "exists" in again.stdout + again.stderr
    missing = cli("init", "--corpus", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "x.yaml"), check=False)
    assert missing.returncode == 2 and "nope.jsonl" in missing.stdout + missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "x.yaml").exists()


def _spec(stats: CorpusStats, machine: Machine) -> dict:
    text = render("corpus.jsonl", None, "j", "all-MiniLM-L6-v2", stats, machine, 384)
    data = yaml.safe_load(text)
    validate_dict(data)
    return data["stages"]


def test_sizing_follows_the_machine_and_the_corpus() -> None:
    big = CorpusStats(docs=200_000, chars=200_000 * 1500, bad_rows=0)
    gpu = _spec(big, Machine(cuda=True, gpu_gb=80, cores=16, ram_gb=128))
    assert gpu["generate"]["backend"] == "vllm" and "llm" in gpu["generate"]["sources"]
    assert gpu["train"]["batch_size"] == 128 and gpu["train"]["epochs"] == 1 and "max_steps" not in gpu["train"]
    assert "query_kinds" not in gpu["train"]  # every kind trains

    cpu = _spec(big, Machine(cuda=False, gpu_gb=0, cores=2, ram_gb=24))
    assert cpu["generate"]["sources"] == ["title", "ict", "keyword"] and "backend" not in cpu["generate"]
    assert cpu["train"]["query_kinds"] == ["ict", "keyword"]
    assert cpu["train"]["batch_size"] == 32 and cpu["train"]["max_steps"] == 120  # an hour on 2 cores

    small = _spec(CorpusStats(docs=50, chars=50 * 800, bad_rows=0), Machine(False, 0, 2, 24))
    assert "llm" not in small["generate"]["sources"] and small["train"]["epochs"] == 1  # 100 rows: one pass
    assert "datasets" not in small["evaluate"] and "judged_queries" not in small["train"]


def test_dev_share_divides_the_judged_queries_between_train_and_evaluate(cli, tmp_path: Path,
                                                                          cranfield_slice: Path) -> None:
    judged = Path(shutil.copytree(cranfield_slice, tmp_path / "cf"))
    out = tmp_path / "job.yaml"
    proc = cli("init", "--corpus", str(judged), "--eval", str(judged), "--dev-share", "0.5", "-o", str(out))
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "judged queries choose the checkpoint (qrels/test-dev.tsv)" in said
    assert "--train-share" not in said  # 20 dev queries: too few to suggest training on them
    spec = load_spec(out)
    train, evaluate = spec.stages["train"], spec.stages["evaluate"]
    assert (train.validation, train.judged_split, train.judged_queries) == ("judged", "test-dev", str(judged))
    assert train.early_stopping_patience == 2 and evaluate.split == "test-heldout"
    assert not set(load_qrels(judged / "qrels" / "test-dev.tsv")) & set(load_qrels(judged / "qrels" / "test-heldout.tsv"))
    cli("validate", str(out))  # the pre-flight check finds the two parts disjoint
    lonely = cli("init", "--corpus", str(judged), "--dev-share", "0.5", "-o", str(tmp_path / "x.yaml"), check=False)
    assert lonely.returncode == 2 and "pass --eval too" in lonely.stdout + lonely.stderr


def test_train_share_writes_a_query_side_job_on_three_disjoint_parts(cli, tmp_path: Path,
                                                                    cranfield_slice: Path) -> None:
    judged = Path(shutil.copytree(cranfield_slice, tmp_path / "cf"))
    for stale in (judged / "qrels").glob("test-*.tsv"):
        stale.unlink()  # the parts init writes, not the fixture's
    out = tmp_path / "job.yaml"
    proc = cli("init", "--corpus", str(judged), "--eval", str(judged), "--dev-share", "0.5", "--train-share", "0.7",
               "-o", str(out))
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "train (qrels/test-dev-heldout.tsv)" in said and "choose the checkpoint (qrels/test-dev-dev.tsv)" in said
    spec = load_spec(out)
    train, evaluate = spec.stages["train"], spec.stages["evaluate"]
    assert (train.mode, train.validation, train.judged_split, train.judged_train_split) == \
        ("query", "judged", "test-dev-dev", "test-dev-heldout")
    assert train.max_negatives == 0 and train.judged_queries == str(judged) and evaluate.split == "test-heldout"
    parts = {name: set(load_qrels(judged / "qrels" / f"{name}.tsv"))
             for name in ("test-dev-dev", "test-dev-heldout", "test-heldout")}
    assert all(parts.values()) and sum(map(len, parts.values())) == len(load_qrels(judged / "qrels" / "test.tsv"))
    assert len(parts["test-dev-heldout"]) > len(parts["test-dev-dev"])  # 70 % of the dev part trains
    assert not (parts["test-dev-dev"] & parts["test-dev-heldout"]) and not (parts["test-heldout"] &
                                                                              (parts["test-dev-dev"] | parts["test-dev-heldout"]))
    cli("validate", str(out))  # the pre-flight check: trained queries are neither validated nor evaluated

    for bad, message in ((["--train-share", "0.7"], "pass --dev-share too"),
                         (["--dev-share", "0.5", "--train-share", "1.5"], "between 0 and 1")):
        proc = cli("init", "--corpus", str(judged), "--eval", str(judged), *bad, "-o", str(tmp_path / "x.yaml"),
                   check=False)
        assert proc.returncode == 2 and message in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "x.yaml").exists()


def test_init_suggests_train_share_when_the_dev_part_is_large(cli, tmp_path: Path) -> None:
    beir = tmp_path / "many"
    (beir / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"title {i}", "text": f"document number {i} about topic {i % 7}"}
            for i in range(20)]
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"topic {i % 7}?"}) + "\n"
                                                for i in range(220)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i % 20}\t1\n"
                                                                                      for i in range(220)))
    proc = cli("init", "--corpus", str(beir), "--eval", str(beir), "--dev-share", "0.5", "-o", str(tmp_path / "j.yaml"))
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "110 dev queries are enough to train on as well: --train-share 0.7" in said
