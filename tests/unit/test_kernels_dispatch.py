"""Kernel dispatch: one decision in ``embedforge.device.kernel_backend()``, no leaks, both interpreter modes work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import embedforge.kernels as kernels
from embedforge import device as dev
from embedforge.kernels import reference


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("EMBEDFORGE_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return monkeypatch


def test_backend_is_forced_by_env_and_follows_the_data(clean_env: pytest.MonkeyPatch) -> None:
    expected_auto = "triton" if dev.cuda_available() else "torch"
    assert dev.kernel_backend() == expected_auto
    assert dev.kernel_backend(torch.device("cpu")) == "torch"  # CPU data never goes to compiled Triton
    clean_env.setenv("TRITON_INTERPRET", "1")
    assert dev.kernel_backend(torch.device("cpu")) == "interpret"
    for forced in ("torch", "triton", "interpret"):
        clean_env.setenv("EMBEDFORGE_KERNELS", forced)
        assert dev.kernel_backend("cpu") == forced


def test_cpu_default_is_the_reference(clean_env: pytest.MonkeyPatch) -> None:
    hidden, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.int64)
    assert torch.equal(kernels.pool_normalize(hidden, mask, 8), reference.pool_normalize(hidden, mask, 8))
    q, c = torch.randn(4, 16), torch.randn(30, 16)
    got, want = kernels.similarity_topk(q, c, 5), reference.similarity_topk(q, c, 5)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_forcing_compiled_triton_on_cpu_tensors_is_a_clear_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("EMBEDFORGE_KERNELS", "triton")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        kernels.quantize_int8(torch.randn(2, 8))


def test_large_k_leaves_the_compiled_kernel_only_on_cuda() -> None:
    assert kernels.topk_backend("triton", kernels.FUSED_K_MAX) == "triton"
    assert kernels.topk_backend("triton", kernels.FUSED_K_MAX + 1) == "torch"
    assert kernels.topk_backend("interpret", 2500) == "interpret"  # the kernel itself takes any k
    assert kernels.topk_backend("torch", 10) == "torch"


def test_interpreted_launch_leaves_no_trace(clean_env: pytest.MonkeyPatch) -> None:
    from triton import knobs
    from triton.runtime.jit import JITFunction

    call_before = JITFunction.__call__
    clean_env.setenv("EMBEDFORGE_KERNELS", "interpret")
    codes, _ = kernels.quantize_int8(torch.randn(3, 8))
    assert codes.dtype == torch.int8
    assert "TRITON_INTERPRET" not in os.environ
    assert JITFunction.__call__ is call_before
    assert "interpret" not in knobs.runtime.__dict__


def test_native_triton_interpret_mode_in_a_fresh_process(repo: Path) -> None:
    """``TRITON_INTERPRET=1`` set before Triton is imported (Triton's own mode): every kernel vs its reference."""
    script = textwrap.dedent("""
        import torch, kernels
        from embedforge import device
        from embedforge.kernels import reference as R
        from triton.runtime.interpreter import InterpretedFunction
        from embedforge.kernels.topk import _similarity_topk_kernel
        assert device.kernel_backend() == "interpret"
        assert isinstance(_similarity_topk_kernel, InterpretedFunction)
        g = torch.Generator().manual_seed(0)
        h, m = torch.randn(3, 9, 40, generator=g), torch.ones(3, 9, dtype=torch.int64)
        m[1] = 0
        torch.testing.assert_close(kernels.pool_normalize(h, m, 24), R.pool_normalize(h, m, 24), atol=2e-6, rtol=0)
        q, c = torch.randn(5, 40, generator=g), torch.randn(130, 40, generator=g)
        s, i = kernels.similarity_topk(q, c, 7); rs, ri = R.similarity_topk(q, c, 7)
        assert torch.equal(i, ri), (i, ri)
        qc, qs = kernels.quantize_int8(q); cc, cs = kernels.quantize_int8(c)
        assert torch.equal(cc, R.quantize_int8(c)[0])
        assert torch.equal(kernels.int8_topk(qc, qs, cc, cs, 7)[1], R.int8_topk(qc, qs, cc, cs, 7)[1])
        qb, cb = kernels.pack_binary(q), kernels.pack_binary(c)
        assert torch.equal(cb, R.pack_binary(c))
        assert torch.equal(kernels.hamming_topk(qb, cb, 7)[1], R.hamming_topk(qb, cb, 7)[1])
        assert torch.equal(kernels.rescore(q, c, ri, 3)[1], R.rescore(q, c, ri, 3)[1])
        print("all kernels ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    env.pop("EMBEDFORGE_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all kernels ok" in proc.stdout
