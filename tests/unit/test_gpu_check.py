"""The GPU check kit (benchmarks/gpu_check.py) at tiny sizes on the CPU, and the CUDA checks it runs under ``-m gpu``.

The CPU test runs the real script end to end in a subprocess; the ``gpu`` tests run only where CUDA is (the kit's
``pytest`` section collects them there) and check the device module's choices and the encoder on CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("kernels", "encode", "mining", "training", "pytest", "faiss_gpu", "vllm")


def _kit():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_a_well_formed_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-P", str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    report = json.loads((out / "gpu_check.json").read_text())
    text = (out / "gpu_check.md").read_text()
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert report["mode"] == "tiny-cpu" and report["machine"]["git_sha"] and report["complete"] is True
    assert list(report["sections"]) == list(SECTIONS)
    for name, sec in report["sections"].items():
        assert sec["status"] in ("ran", "skipped"), (name, sec)
        if sec["status"] == "skipped":
            assert sec["reason"].strip(), name
        assert f"| {name} | {sec['status']} |" in text
    for name in ("pytest", "kernels", "encode", "mining", "training"):
        assert report["sections"][name]["status"] == "ran", name  # everything they need is installed here
        assert report["sections"][name]["ok"] is True, name
    # faiss here is faiss-cpu: the GPU comparison is skipped, and says why
    assert report["sections"]["faiss_gpu"]["status"] == "skipped"

    pytest_sec = report["sections"]["pytest"]
    assert "tests/unit/test_gpu_check.py" in pytest_sec["files"]
    assert pytest_sec["counts"]["skipped"] >= 10 and pytest_sec["counts"]["failed"] == 0  # no CUDA: all skipped
    kernels = report["sections"]["kernels"]["rows"]
    assert {(r["kernel"], r["dtype"]) for r in kernels} >= {("similarity_topk", d) for d in ("fp32", "fp16", "bf16")}
    assert all(r["correct"] for r in kernels)
    encode = report["sections"]["encode"]["rows"]
    assert encode[0]["path"].startswith("SentenceTransformer.encode")
    assert all(r["min_cosine_vs_st"] > 0.99 for r in encode[1:]) and all(r["texts_per_s"] > 0 for r in encode)
    mining = report["sections"]["mining"]["rows"][0]
    assert mining["overlap"] >= 0.95 and mining["ours_kept"] > 0 and not mining["st_reencoded"]
    training = report["sections"]["training"]["rows"]
    assert [r["batch"] for r in training] == [8, 16] and all(r["steps_per_s"] > 0 for r in training)
    assert "| kernels | ran |" in text and "## mining" in text
    assert (out / "pytest.log").is_file()


def test_sections_past_the_time_budget_are_skipped_with_the_reason(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-P", str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--out",
                           str(tmp_path), "--sections", "vllm,kernels", "--budget-s", "0"], capture_output=True,
                          text=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [s["status"] for s in report["sections"].values()] == ["skipped", "skipped"]
    assert report["sections"]["kernels"]["reason"].startswith("time budget:")


def test_bad_section_name_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-P", str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--out",
                           str(tmp_path), "--sections", "kernels,nope"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown section" in proc.stderr and "Traceback" not in proc.stderr


def test_synthetic_model_and_texts(tmp_path: Path) -> None:
    kit = _kit()
    model_dir, words = kit.build_model_dir(tmp_path / "m", kit.TINY_CONFIG, seed=1)
    assert len(words) > 1000 and len(set(words)) == len(words)
    texts = kit.synthetic_texts(200, words, seed=3)
    assert texts == kit.synthetic_texts(200, words, seed=3) and len(set(texts)) == 200
    from transformers import AutoTokenizer

    lengths = [len(x) for x in AutoTokenizer.from_pretrained(model_dir)(texts)["input_ids"]]
    assert min(lengths) < 24 and max(lengths) > 256  # mixed lengths, long ones truncated by the model
    # the same seed gives the same weights: the reference and our path see one model
    from safetensors.torch import load_file

    again, _ = kit.build_model_dir(tmp_path / "m2", kit.TINY_CONFIG, seed=1)
    a, b = load_file(model_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # flops per token of the MiniLM config: the issue's ~22 MFLOP at ~128 tokens
    per_token = kit.useful_flops(np.array([128]), kit.MINILM_CONFIG) / 128
    assert 20e6 < per_token < 24e6


def test_a_missing_dependency_skips_the_section_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = _kit()

    def section(ctx):
        kit.need("numpy", "no_such_module_for_gpu_check", why="just a test")
        return {"rows": []}

    def broken(ctx):
        raise ValueError("boom")

    monkeypatch.setitem(kit.SECTIONS, "fake", section)
    monkeypatch.setitem(kit.SECTIONS, "broken", broken)
    skipped, failed = kit.run_section("fake", None), kit.run_section("broken", None)
    assert skipped["status"] == "skipped" and skipped["reason"] == "no_such_module_for_gpu_check not installed (just a test)"
    assert failed["status"] == "failed" and failed["reason"] == "ValueError: boom" and "Traceback" in failed["traceback"]


def test_one_cuda_major_in_the_gpu_extra_the_constraints_and_the_image() -> None:
    """By construction (no container engine, no GPU here): the gpu extra, its pins and the image agree on CUDA 13."""
    import re
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = (REPO / "constraints" / "gpu-cuda13.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert len(pins) > 100 and all(re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", name) for name in pins)
    for spec in extras["gpu"] + extras["serve"]:  # every direct requirement is pinned, within its range
        req = Requirement(spec)
        assert req.name in pins, req.name
        assert req.specifier.contains(pins[req.name], prereleases=True), (spec, pins[req.name])
    assert pins["cuda-toolkit"].startswith("13.") and pins["torch"] == "2.14.0"
    cuda12 = [name for name in pins if re.search(r"cu(da)?-?12|cu12", name)]
    assert cuda12 == ["nvidia-cutlass-dsl-libs-cu12"], cuda12  # the one documented exception (docs/gpu.md)
    assert not any("vllm" in r or "ray" in r for r in extras["serve"])
    containerfile = (REPO / "Containerfile.cuda").read_text()
    assert re.search(r"^ARG CUDA_VERSION=13\.", containerfile, re.M)
    assert "ENV PIP_CONSTRAINT=/src/constraints/gpu-cuda13.txt" in containerfile
    assert "COPY constraints ./constraints" in containerfile and 'pip install ".[serve]"' in containerfile


# ------------------------------------------------------------------ CUDA only (the kit's pytest section)


@pytest.mark.gpu
def test_device_module_choices_on_cuda() -> None:
    from embedforge import device as dev

    assert dev.cuda_available() and dev.device().type == "cuda"
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert dev.compute_dtype() == want
    assert dev.compute_dtype(preference="fp16") == torch.float16
    assert dev.mixed_precision_flags() == {"bf16": want == torch.bfloat16, "fp16": want == torch.float16}
    assert dev.kernel_backend() == "triton" and dev.kernel_backend("cpu") == "torch"
    a = torch.randn(64, 64, device="cuda")
    with dev.autocast():
        assert (a @ a).dtype == want
    with dev.autocast(dtype=torch.float16):
        assert (a @ a).dtype == torch.float16
    assert dev.gpu_count() == torch.cuda.device_count()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_encoder_on_cuda_matches_fp32(tmp_path: Path, dtype: str) -> None:
    """The encoder's CUDA path (pinned copies, autocast, fused Triton pooling) against its own fp32 run."""
    from embedforge.encoding.encoder import Encoder

    kit = _kit()
    model_dir, words = kit.build_model_dir(tmp_path / "m", kit.MINILM_CONFIG, seed=2)
    texts = kit.synthetic_texts(2000, words, seed=4)
    exact = Encoder(model_dir, device="cuda", dtype="fp32", backend="torch").encode(texts)
    fast = Encoder(model_dir, device="cuda", dtype=dtype, backend="torch", max_batch_tokens=65536).encode(texts)
    assert fast.shape == exact.shape == (2000, 384)
    assert np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-4)
    assert float(np.min(np.sum(fast * exact, axis=1))) > 0.99


@pytest.mark.gpu
def test_pooling_on_cuda_uses_the_triton_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedforge.encoding.encoder import pool
    from embedforge.kernels import pooling, reference

    backends: list[str] = []
    real = pooling.pool_normalize

    def spy(*args, backend: str, **kwargs):
        backends.append(backend)
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(pooling, "pool_normalize", spy)
    hidden = torch.randn(16, 77, 384, device="cuda", dtype=torch.bfloat16)
    mask = (torch.arange(77, device="cuda")[None] < torch.randint(1, 78, (16, 1), device="cuda")).long()
    got = pool(hidden, mask, "mean", True)
    assert backends == ["triton"]
    torch.testing.assert_close(got, reference.pool_normalize(hidden, mask), atol=1e-5, rtol=0)
