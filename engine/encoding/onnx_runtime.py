"""ONNX Runtime backend of the encoder: export a transformer once, fuse it, cache it on disk, run it with ORT.

The graph ORT runs is the *fused* one when it can be built: the model is exported with eager attention (the
pattern ORT's transformer optimizer recognizes) and passed once through
``onnxruntime.transformers.optimizer.optimize_model`` (``model_type="bert"``), which replaces each layer's
attention block with one ``Attention`` op (packed Q/K/V GEMM, softmax with the padding mask), the residual adds
and LayerNorms with ``SkipLayerNormalization``, bias + GELU with ``BiasGelu`` and the embeddings with
``EmbedLayerNormalization``. The fused graph is exact fp32 (no GELU approximation, no fp16): before it is kept it
is checked against the plain export on a padded probe batch (per-token cosine ≥ :data:`FUSED_MIN_COSINE`); a
model whose graph the optimizer cannot fuse, or fuses into something that fails the check, runs the plain export
(and the refusal is remembered next to the cache, so it is not retried on every start).

ORT's dynamic int8 quantization (per-channel weight scales; VNNI where the CPU has it) of the plain export is the
``onnx-int8`` backend: faster, lossy (the benchmark reports its nDCG@10 change). It passes a fidelity gate when
it is built: the mean-pooled vectors of the probe batch must keep a min cosine of :data:`INT8_MIN_COSINE` to
the fp32 export, else the backend is refused with that figure. Export needs the ``onnx`` package. Everything lives under
``$EMBEDFORGE_CACHE/onnx/<model_id>-<input names>/`` and is written atomically (temporary file + rename), so
concurrent processes never see a torn file; a cached file that still fails to load (truncated by a full disk,
copied half-way) is deleted and built again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedforge import device as dev

log = logging.getLogger("embedforge.onnx")

FUSED_RECIPE = "fused-v1"
"""Name of the fusion recipe; part of the cached file name, so a changed recipe builds a new file."""
FUSED_MIN_COSINE = 0.9999
"""The fused graph is kept only when every real token's hidden state has at least this cosine to the plain
export's on the probe batch."""

INT8_MIN_COSINE = 0.98
"""The ``onnx-int8`` backend is refused unless every mean-pooled probe vector keeps this cosine to fp32. On
SciFact chunks the probe's figure tracked the real one (AVX2-only EPYC): per-tensor scales 0.947 on the probe
(0.89 over 618 SciFact chunks, refused), per-channel 0.988 (0.987 over the chunks, nDCG@10 +0.002 vs fp32;
``benchmarks/bench_embed.py``)."""


def cache_root() -> Path:
    """``$EMBEDFORGE_CACHE`` (default ``~/.cache/embedforge``)."""
    return Path(os.environ.get("EMBEDFORGE_CACHE") or "~/.cache/embedforge").expanduser()


class _LastHidden(torch.nn.Module):
    """Keyword-only forward returning the last hidden state (what the exporter traces)."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs, strict=True))).last_hidden_state


@contextlib.contextmanager
def _attention(model: torch.nn.Module, implementation: str | None) -> Iterator[None]:
    """Run ``model`` with another attention implementation (``eager``: the graph pattern ORT's optimizer fuses)."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if implementation is None or config is None or before is None:
        yield
        return
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = before


@contextlib.contextmanager
def _atomic_target(target: Path, suffix: str = ".tmp") -> Iterator[str]:
    """A temporary path next to ``target``, renamed onto it when the block succeeds, removed in any case."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def export_onnx(model: torch.nn.Module, input_names: list[str], target: Path, *,
                attention: str | None = None) -> Path:
    """Export ``model`` (a HF encoder) to ``target`` with dynamic batch and sequence axes, atomically.

    ``attention``: the attention implementation to trace (``"eager"`` for the fusable pattern; ``None`` keeps
    the model's own)."""
    dev.optional_import("onnx", "the ONNX Runtime encoder backend (torch.onnx export)")
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in input_names)
    axes = {name: {0: "batch", 1: "seq"} for name in [*input_names, "last_hidden_state"]}
    with _atomic_target(target) as tmp, _attention(model, attention), torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(_LastHidden(model.float().cpu().eval(), input_names), example, tmp,
                          input_names=input_names, output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return target


def fuse_transformer(source: Path, target: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ORT's transformer optimizer on ``source`` (an eager-attention export), written atomically to ``target``.

    ``opt_level=0``: only the Python fusions are applied here; ORT's own graph optimizations run when the session
    loads (``ORT_ENABLE_ALL``), so the file stays portable across CPUs. Returns the fused-operator counts."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_gelu_approximation = False  # exact erf GELU: the fused graph must stay fp32-exact
    fused = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                           optimization_options=options, opt_level=0)
    with _atomic_target(target, ".onnx") as tmp:
        fused.save_model_to_file(tmp)
    return {k: v for k, v in fused.get_fused_operator_statistics().items() if v}


def quantize_int8(source: Path, target: Path) -> Path:
    """ORT dynamic int8 quantization of the weights, one scale per output channel (activations quantized per
    batch at run time). Per-tensor scales were tried first: on an AVX2-only CPU their SciFact vectors fell to a
    min cosine of 0.90 to fp32 (0.988 per channel, at the same speed); 7-bit ``reduce_range`` did not help."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _atomic_target(target, ".onnx") as tmp:
        quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8, per_channel=True)
    return target


def pooled_cosine(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Smallest cosine between the mean-pooled rows of two ``(B, T, H)`` outputs."""
    m = mask[..., None].astype(np.float64)
    x, y = (a * m).sum(1) / m.sum(1), (b * m).sum(1) / m.sum(1)
    return float(((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-30)).min())


def probe_features(input_names: list[str], vocab_size: int) -> dict[str, np.ndarray]:
    """A small right-padded batch (lengths 16, 11 and 5) of in-vocabulary ids: what the fusion check runs."""
    lengths = [16, 11, 5]
    ids = np.zeros((len(lengths), max(lengths)), np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = [(101 + 7919 * (row * 31 + j)) % max(vocab_size - 1, 2) + 1 for j in range(n)]
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def token_cosine(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Smallest cosine between matching real-token hidden states of two ``(B, T, H)`` outputs."""
    keep = mask.astype(bool)
    x, y = a[keep].astype(np.float64), b[keep].astype(np.float64)
    return float(((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-30)).min())


class OrtTransformer:
    """A cached ONNX export of a HF transformer run by ONNX Runtime: ``__call__(features) -> last hidden state``.

    ``fused=True`` (the default) runs the fused graph when one can be built and passes the check, else the plain
    export; :attr:`graph` says which (``"fused-v1"``, ``"plain"`` or ``"int8"``)."""

    def __init__(self, model: torch.nn.Module, model_id: str, input_names: list[str], *, int8: bool = False,
                 threads: int | None = None, fused: bool = True) -> None:
        self._ort = dev.optional_import("onnxruntime", "the ONNX Runtime encoder backend")
        self.threads = threads or torch.get_num_threads()
        self.folder = cache_root() / "onnx" / f"{model_id}-{'-'.join(input_names)}"
        plain = self.folder / "model.onnx"

        def build_plain() -> None:
            log.info("exporting %s to ONNX (once, cached in %s)", model_id, self.folder)
            export_onnx(model, input_names, plain)

        self.session, self.path, self.graph = self._load(plain, build_plain), plain, "plain"
        self.int8_cosine: float | None = None
        """``onnx-int8`` only: the min cosine of its pooled probe vectors to fp32 (the fidelity gate's figure)."""
        if int8:
            self.path, self.graph = self.folder / "model.int8-pc.onnx", "int8"
            exact, self.session = self.session, self._load(self.path, lambda: quantize_int8(plain, self.path))
            probe = probe_features(input_names, int(getattr(getattr(model, "config", None), "vocab_size", 30000)))
            self.int8_cosine = pooled_cosine(self._run(self.session, probe), self._run(exact, probe),
                                             probe["attention_mask"])
            if self.int8_cosine < INT8_MIN_COSINE:
                raise ValueError(f"encoder backend 'onnx-int8' refused on this CPU ({dev.cpu_model()}): its "
                                 f"vectors' min cosine to fp32 on the probe batch is {self.int8_cosine:.4f} < "
                                 f"{INT8_MIN_COSINE}; use backend 'onnx' or 'torch' (exact fp32)")
        elif fused:
            session = self._fused_session(model, input_names)
            if session is not None:
                self.session, self.graph = session, FUSED_RECIPE
                self.path = self.folder / f"model.{FUSED_RECIPE}.onnx"
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _options(self) -> Any:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options

    def _load(self, path: Path, build: Callable[[], Any]) -> Any:
        """A session on ``path``, building the file first when absent; a file that fails to load is rebuilt once."""
        if not path.is_file():
            build()
        try:
            return self._ort.InferenceSession(str(path), self._options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for a bad file
            log.warning("cached ONNX file %s does not load (%s); building it again", path, str(exc)[:200])
            path.unlink(missing_ok=True)
            build()
            return self._ort.InferenceSession(str(path), self._options(), providers=["CPUExecutionProvider"])

    def _fused_session(self, model: torch.nn.Module, input_names: list[str]) -> Any | None:
        """The fused graph's session, or ``None`` when it cannot be built or fails the check (remembered)."""
        target = self.folder / f"model.{FUSED_RECIPE}.onnx"
        refused = self.folder / f"model.{FUSED_RECIPE}.refused"
        if refused.is_file():
            return None
        config = getattr(model, "config", None)

        def build() -> None:
            eager = self.folder / f".model.eager.{os.getpid()}.onnx"
            try:
                log.info("fusing the ONNX graph (once, cached as %s)", target.name)
                export_onnx(model, input_names, eager, attention="eager")
                counts = fuse_transformer(eager, target, int(getattr(config, "num_attention_heads", 0) or 0),
                                          int(getattr(config, "hidden_size", 0) or 0))
                log.info("fused operators: %s", counts)
            finally:
                eager.unlink(missing_ok=True)

        try:
            session = self._load(target, build)
            probe = probe_features(input_names, int(getattr(config, "vocab_size", 30000) or 30000))
            cosine = token_cosine(self._run(session, probe), self._run(self.session, probe), probe["attention_mask"])
        except Exception as exc:  # noqa: BLE001 - an optimizer/exporter failure means: run the plain export
            reason = f"the fused graph could not be built or run: {str(exc)[:300]}"
        else:
            if cosine >= FUSED_MIN_COSINE:
                return session
            reason = f"the fused graph's min token cosine to the plain export is {cosine:.6f} < {FUSED_MIN_COSINE}"
        log.warning("%s; using the plain ONNX export", reason)
        target.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            refused.write_text(reason + "\n")
        return None

    @staticmethod
    def _run(session: Any, features: dict[str, Any]) -> np.ndarray:
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {n: np.ascontiguousarray(features[n], dtype=np.int64) for n in names})[0]

    def __call__(self, features: dict[str, Any]) -> torch.Tensor:
        feed = {name: np.ascontiguousarray(features[name], dtype=np.int64) for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0])
