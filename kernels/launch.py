"""Pick the compiled or the interpreted form of a ``@triton.jit`` kernel for one launch.

Triton decides between compiling and interpreting when a function is decorated: ``@triton.jit`` reads
``TRITON_INTERPRET`` at import time, for our kernels and for ``triton.language``'s own helpers
(``tl.sum``, ``tl.sort``, ...). A process that imported Triton without that variable therefore cannot
interpret a kernel later, and one that imported it *with* the variable cannot compile. So that the backend
stays a run-time choice (``embedforge.device.kernel_backend()``: ``EMBEDFORGE_KERNELS=interpret`` in tests,
compiled kernels on CUDA in the same process), :func:`launcher` wraps a compiled-mode kernel in Triton's
``InterpretedFunction`` and, for the duration of the launch only, routes nested ``@triton.jit`` calls through
the interpreter too. Launches are serialized by a lock while that routing is in place.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from embedforge import device as dev

_LOCK = threading.Lock()


def resolve_backend(x: torch.Tensor, backend: str | None = None) -> str:
    """The backend for a call on tensor ``x``: the device module decides; CPU tensors never go to ``triton``."""
    chosen = backend or dev.kernel_backend(x.device)
    if chosen == "triton" and not x.is_cuda:
        raise RuntimeError(f"the 'triton' kernel backend needs CUDA tensors, got a tensor on {x.device}; "
                           "use EMBEDFORGE_KERNELS=torch or interpret on CPU")
    return chosen


@functools.cache
def _interpreted(fn: Callable) -> Any:
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(fn)


@contextlib.contextmanager
def _interpreting() -> Iterator[None]:
    """Route nested ``@triton.jit`` calls (``tl.sum``, our helpers) through the interpreter.

    ``triton.language`` and ``triton.language.core`` are patched once for the whole launch (Triton's own
    interpreter re-patches them on every nested call, which dominates the run time of small programs).
    """
    from triton import knobs
    from triton.language import standard
    from triton.runtime.interpreter import _patch_lang
    from triton.runtime.jit import JITFunction

    original = JITFunction.__call__

    def call_interpreted(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _interpreted(self.fn).rewrite()(*args, **kwargs)

    with _LOCK:
        JITFunction.__call__ = call_interpreted  # type: ignore[method-assign]
        knobs.runtime.__dict__["interpret"] = True  # not the setter: it would export TRITON_INTERPRET=1
        scope = _patch_lang(standard.max.fn)  # patches triton.language.core, used by the standard library
        try:
            yield
        finally:
            scope.restore()
            JITFunction.__call__ = original  # type: ignore[method-assign]
            knobs.runtime.__dict__.pop("interpret", None)


class _InterpretedLaunch:
    def __init__(self, kernel: Any) -> None:
        self.kernel = _interpreted(kernel.fn)

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            for name in ("num_warps", "num_stages"):
                kwargs.pop(name, None)
            with _interpreting():
                self.kernel[grid](*args, **kwargs)

        return launch


def launcher(kernel: Any, backend: str) -> Any:
    """``kernel`` itself for ``triton`` (or when Triton was imported in interpreter mode), else an interpreter.

    Use as ``launcher(_my_kernel, backend)[grid](*args, BLOCK=..., num_warps=4)``.
    """
    from triton.runtime.interpreter import InterpretedFunction

    if backend != "interpret" or isinstance(kernel, InterpretedFunction):
        return kernel
    return _InterpretedLaunch(kernel)
