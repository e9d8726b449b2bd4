"""The one encoder: every stage that embeds text (mine, evaluate, embed, serve, the round-trip filter) uses this.

How it is fast:

- texts are tokenized once (no padding) in a background thread, a window at a time, while the model runs;
- each window is sorted by length and cut into batches by a token budget (``batch × longest ≤ max_tokens``),
  not a fixed count, so short texts go in large batches and padding stays small; on CPU the budget is also
  capped at ``cpu_batch_tokens`` (1,024 per thread), the size that keeps a batch's activations in cache;
- the model runs without sentence-transformers' per-batch overhead: the HF transformer directly, then a small
  pooling function (masked mean / CLS) and the model's own normalization;
- backends: ``torch`` (fp32, or bf16/fp16 autocast; on CUDA pinned memory, non-blocking copies, one replica per
  visible GPU), ``onnx`` (ONNX Runtime fp32 on the fused graph of :mod:`embedforge.encoding.onnx_runtime`: the
  fastest exact CPU path here), ``onnx-int8`` (ORT dynamic int8,
  lossy) and ``st`` (sentence-transformers' own forward, for module stacks the fast path does not know);
  ``auto`` for fp32 on CPU times ``onnx`` (when onnxruntime and onnx are installed) and ``torch`` on a probe
  batch at start-up and keeps the faster, so the default is never the slower of the two on the CPU at hand;
  ``torch`` elsewhere (``EMBEDFORGE_ENCODER_BACKEND`` overrides what ``auto`` means, e.g. ``torch`` to skip
  ONNX exports);
- bf16/fp16: the Linear weights are cast once and the rest runs under autocast (LayerNorm, softmax and
  pooling stay fp32, which keeps cosine ≥ 0.9999 to fp32 where plain bf16 weights give ~0.998);
- an optional on-disk cache (:mod:`embedforge.encoding.cache`): a text already encoded by the same model and
  variant is read back instead of encoded (``Encoder(..., cache=True)`` or ``encode(..., cache=True)``).

Vectors can be truncated to a Matryoshka dimension and re-normalized (:func:`truncate_normalize`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedforge import device as dev
from embedforge.encoding.cache import EmbeddingCache, shared_cache
from embedforge.models import model_id, resolve_model, route_model_id, route_modules, route_of

log = logging.getLogger("embedforge.encoder")

BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "st")
CPU_BATCH_TOKENS_PER_THREAD = 1024
"""On CPU a batch larger than about a thousand padded tokens per thread only adds cache misses (the activations
and attention scores no longer stay in L2): measured with MiniLM on one core, 16,384-token batches ran 1.3x
(~175-token passages) to 1.5x (~20-token queries) slower than 512-1,024-token ones, with ONNX Runtime and torch
alike. GPUs keep the full budget."""


def truncate_normalize(vectors: np.ndarray, dim: int | None, normalize: bool = True) -> np.ndarray:
    """Keep the first ``dim`` components (Matryoshka) and L2-normalize rows."""
    if dim is not None:
        if dim > vectors.shape[1]:
            raise ValueError(f"dimension {dim} is larger than the model's {vectors.shape[1]}")
        vectors = vectors[:, :dim]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_batch: int = 512) -> list[list[int]]:
    """Index batches over inputs sorted by length (longest first) so that ``len(batch) * longest <= max_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = max(lengths[i], 1)
        if current and (max(longest, n) * (len(current) + 1) > max_tokens or len(current) >= max_batch):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str, normalize: bool) -> torch.Tensor:
    """Sentence vectors fp32 ``(B, H)`` from token states ``(B, T, H)``: masked mean or CLS, then optional L2.

    ``mask`` may be a float weight per token (``WordWeights``: mask x weight of the token id); the mean then divides
    by the sum of the weights, as sentence-transformers' Pooling does with ``token_weights_sum``.

    The mean path is ``embedforge.kernels.reference.pool_normalize`` semantics; on CUDA with Triton the fused kernel of
    ``embedforge.kernels.pooling`` does it in one pass.
    """
    if mode == "cls":
        vectors = hidden[:, 0].float()
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors
    if hidden.is_cuda and dev.kernel_backend() == "triton" and not mask.is_floating_point():
        from embedforge.kernels.pooling import pool_normalize

        return pool_normalize(hidden, mask, None, normalize, backend="triton")
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    summed = (hidden * weights).sum(1, dtype=torch.float32)
    vectors = summed / weights.sum(1, dtype=torch.float32).clamp(min=1e-9)
    return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors


def token_weights(model: torch.nn.Module) -> torch.Tensor | None:
    """The weight per token id of the model's ``WordWeights`` module (fp32), or None when it has none."""
    module = next((m for m in model if type(m).__name__ == "WordWeights"), None)
    return None if module is None else module.emb_layer.weight.detach().reshape(-1).float().cpu()


def projection(model: torch.nn.Module) -> torch.Tensor | None:
    """The ``(out, in)`` matrix of the model's corpus rotation (a bias-free identity ``Dense`` after the pooling,
    :mod:`embedforge.training.corpus_rotation`), fp32, or None when it has none."""
    module = next((m for m in model if type(m).__name__ == "Dense"), None)
    return None if module is None else module.linear.weight.detach().float().cpu()


def _is_rotation_config(folder: Path) -> bool:
    """True when the saved ``Dense`` module in ``folder`` has no bias and an identity activation."""
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    return cfg.get("bias") is False and str(cfg.get("activation_function", "")).endswith("Identity") \
        and not cfg.get("use_residual", False)


def _module_stack(model_dir: Path, route: str | None = None) -> tuple[str | None, bool]:
    """``(pooling mode, normalizes)`` when the ST model (or its ``route``, in a Router model) is Transformer →
    [WordWeights] → Pooling(mean|cls) → [Dense rotation] → [Normalize]; else ``(None, ...)`` (the ``st`` backend
    is used)."""
    if route is None and not (model_dir / "modules.json").is_file():
        return "mean", False  # a plain HF model: sentence-transformers adds mean pooling too
    modules = [m for m in route_modules(model_dir, route) if m[0] != "WordWeights"]  # the runner weights the mask
    kinds = [k for k, _ in modules]
    if kinds[2:3] == ["Dense"] and _is_rotation_config(model_dir / modules[2][1]):
        kinds.pop(2)  # a bias-free linear map (the corpus rotation): the runner applies it (projection)
    normalizes = kinds[-1:] == ["Normalize"]
    if kinds[:2] != ["Transformer", "Pooling"] or len(kinds) > 2 + int(normalizes):
        return None, normalizes
    pooling = next(folder for kind, folder in modules if kind == "Pooling")
    cfg = json.loads((model_dir / pooling / "config.json").read_text())
    if "pooling_mode" in cfg:  # the format sentence-transformers >= 6 saves: one mode name (or a list of them)
        mode = cfg["pooling_mode"]
        mode = mode[0] if isinstance(mode, list) and len(mode) == 1 else mode
        return (mode if mode in ("mean", "cls") else None), normalizes
    if cfg.get("pooling_mode_mean_tokens") and not any(v for k, v in cfg.items() if k.startswith("pooling_mode_")
                                                       and k != "pooling_mode_mean_tokens"):
        return "mean", normalizes
    if cfg.get("pooling_mode_cls_token") and not any(v for k, v in cfg.items() if k.startswith("pooling_mode_")
                                                     and k != "pooling_mode_cls_token"):
        return "cls", normalizes
    return None, normalizes


def prefetch(items: Iterator[Any], depth: int = 3, timeout: float | None = None) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` ahead of the consumer (exceptions re-raised here).

    ``timeout``: raise :class:`TimeoutError` when the next item takes longer than this many seconds (a stall
    watchdog; the producer thread is a daemon and is abandoned)."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            box.put(("error", exc))

    thread = threading.Thread(target=work, name="embedforge-tokenize", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, item = box.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no item for {timeout:g} s") from None
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()


class Encoder:
    """A sentence-transformers model directory behind a token-budget batcher and a fast forward path.

    >>> enc = Encoder("all-MiniLM-L6-v2")
    >>> enc.encode(["a query", "a passage"], dim=128).shape
    (2, 128)

    A model with separate query and document encoders (a sentence-transformers ``Router``, as ``train.mode:
    query`` saves) is one encoder per ``role``: ``Encoder(path, role="query")`` runs the query route,
    ``role="document"`` (or None, the model's default route) the document route. A single-encoder model ignores
    ``role``.
    """

    def __init__(self, model: str | Path, *, device: str = "auto", dtype: str = "fp32",
                 max_batch_tokens: int = 16384, max_seq_length: int | None = None, backend: str = "auto",
                 cache: bool | EmbeddingCache = False, window: int = 4096, cpu_batch_tokens: int | None = None,
                 role: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        if backend not in BACKENDS:
            raise ValueError(f"encoder backend '{backend}' is not one of {', '.join(BACKENDS)}")
        self.path = resolve_model(str(model))
        self.route = route_of(self.path, role)
        """The Router route this encoder runs (None: a single-encoder model)."""
        self.device = dev.device(device)
        self.dtype = dev.compute_dtype(self.device, dtype) if dtype != "auto" else dev.compute_dtype(self.device)
        self.model = SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True,
                                         trust_remote_code=False)
        if self.route is not None:  # one route's modules as a model of their own
            self.model = SentenceTransformer(modules=list(self.model[0].sub_modules[self.route]),
                                             device=str(self.device))
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.model.eval()
        self.model_id = route_model_id(self.path, self.route)
        """Id of what this encoder runs (cache, exports and indexes key on it): a Router's route keeps the id of
        the model it copies (:func:`embedforge.models.record_route_origin`)."""
        self.folder_id = self.model_id if self.route is None else model_id(self.path)
        """Id of the model folder as a whole: what names the model in reports and the server."""
        self.dim = int(self.model.get_embedding_dimension())
        self.max_batch_tokens = max_batch_tokens
        self.cpu_batch_tokens = cpu_batch_tokens or CPU_BATCH_TOKENS_PER_THREAD * torch.get_num_threads()
        """On CPU, batches are also cut at this many padded tokens, whatever the budget asked for (see
        :data:`CPU_BATCH_TOKENS_PER_THREAD`)."""
        self.window = window
        self.tokenizer = self.model.tokenizer
        self.pooling, self.normalizes = _module_stack(self.path, self.route)
        self.token_weights = token_weights(self.model)
        """Per-token-id pooling weights of a ``WordWeights`` module (None: plain mask)."""
        self.projection = projection(self.model) if self.pooling is not None else None
        """The corpus rotation applied after pooling (``(out, in)``, fp32), or None."""
        self.backend = self._pick_backend(backend)
        self.cache: EmbeddingCache | None = shared_cache() if cache is True else (cache or None)
        self.stats = {"texts_encoded": 0, "tokens": 0, "cache_hits": 0, "batches": 0}
        """Counters: texts the model actually ran on, their tokens, texts served from the cache, batches."""
        self.onnx_graph: str | None = None
        """The ONNX graph the ``onnx`` backends run (``fused-v1``, ``plain``, ``int8``); ``None`` without ONNX."""
        self._run = self._make_runner()
        self.timings: dict[str, float] = {}
        """Seconds per probe batch of each backend measured when ``auto`` chose between them."""
        if self.backend == "onnx" and self._auto:
            self._keep_faster()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ setup

    def _pick_backend(self, wanted: str) -> str:
        self._auto = False
        if self.pooling is None:
            if wanted not in ("auto", "st"):
                log.warning("%s: module stack not supported by the fast path; using backend 'st'", self.path)
            return "st"
        wanted = os.environ.get("EMBEDFORGE_ENCODER_BACKEND", "") if wanted == "auto" else wanted
        self._auto = wanted in ("", "auto")
        if self._auto:
            exact_cpu = self.device.type == "cpu" and self.dtype == torch.float32
            return "onnx" if exact_cpu and dev.has_module("onnxruntime") and dev.has_module("onnx") else "torch"
        if wanted.startswith("onnx") and self.device.type != "cpu":
            raise ValueError(f"encoder backend '{wanted}' runs on CPU only (device is {self.device})")
        return wanted

    @property
    def variant(self) -> str:
        """What produced the vectors, for the cache namespace: backend and precision."""
        precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        if self.backend == "onnx-int8":
            return f"onnx-int8-s{self.max_seq_length}"
        return f"{'onnx' if self.backend == 'onnx' else 'torch'}-{precision}-s{self.max_seq_length}"

    @property
    def input_names(self) -> list[str]:
        names = list(getattr(self.tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
        return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]

    def _make_runner(self) -> Callable[[dict[str, np.ndarray]], torch.Tensor]:
        """A function features → pooled fp32 vectors (B, dim) on CPU, for the chosen backend."""
        if self.backend == "st":
            def run_st(features: dict[str, np.ndarray]) -> torch.Tensor:
                feats = {k: torch.from_numpy(v).to(self.device) for k, v in features.items()}
                with dev.autocast(self.device, self.dtype):
                    return self.model.forward(feats)["sentence_embedding"].float().cpu()
            return run_st
        hf = self.model[0].auto_model
        if self.backend in ("onnx", "onnx-int8"):
            from embedforge.encoding.onnx_runtime import OrtTransformer

            try:
                ort_model = OrtTransformer(hf, self.model_id, self.input_names, int8=self.backend == "onnx-int8")
                self.onnx_graph = ort_model.graph
            except Exception as exc:  # noqa: BLE001 - an export failure falls back to the exact torch path
                if self.backend == "onnx-int8":
                    raise
                log.warning("ONNX export/load failed (%s); using the torch backend", exc)
                self.backend = "torch"
                return self._make_runner()

            def run_ort(features: dict[str, np.ndarray]) -> torch.Tensor:
                hidden = ort_model(features)
                return self._pool(hidden, self._mask(torch.from_numpy(features["attention_mask"]),
                                                     torch.from_numpy(features["input_ids"])))
            return run_ort
        if self.dtype != torch.float32:  # weights cast once; autocast would re-cast them on every forward
            for module in hf.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(self.dtype)
        replicas = self._replicas(hf)

        def run_torch(features: dict[str, np.ndarray], replica: int = 0) -> torch.Tensor:
            device, module = replicas[replica]
            pin = device.type == "cuda"
            feats = {k: (torch.from_numpy(v).pin_memory() if pin else torch.from_numpy(v)).to(device, non_blocking=pin)
                     for k, v in features.items()}
            with dev.autocast(device, self.dtype):
                hidden = module(**feats).last_hidden_state
            return self._pool(hidden, self._mask(feats["attention_mask"], feats["input_ids"])).cpu()
        return run_torch

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooling, then the corpus rotation when the model has one, then the model's normalization."""
        if self.projection is None:
            return pool(hidden, mask, self.pooling, self.normalizes)
        vectors = pool(hidden, mask, self.pooling, False) @ self.projection.to(hidden.device).T
        return torch.nn.functional.normalize(vectors, dim=-1) if self.normalizes else vectors

    def _mask(self, mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The attention mask, times each token's ``WordWeights`` weight when the model has one."""
        if self.token_weights is None:
            return mask
        return mask.float() * self.token_weights.to(input_ids.device)[input_ids]

    def _keep_faster(self) -> None:
        """Exact fp32 on CPU: time ONNX Runtime and torch on a probe batch here and keep the faster (the winner
        depends on the CPU, its ISA and the load, not on a fixed rule). The choice is measured once per model and
        CPU model and kept in ``$EMBEDFORGE_CACHE/encoder_backend.json``, so every process on this machine (a
        resumed run, a worker, the next job) encodes with the same backend and writes the same bits. A choice
        measured against another ONNX graph (e.g. before the fused graph existed) is measured again."""
        key = f"{self.model_id}|{dev.cpu_model()}"
        if key not in _FASTER:
            _FASTER.update(_read_choices())
        if key in _FASTER and _FASTER[key][2] != self.onnx_graph:
            del _FASTER[key]
        if key in _FASTER:
            self.backend, self.timings = _FASTER[key][0], dict(_FASTER[key][1])
            if self.backend == "torch":
                self._run = self._make_runner()
            return
        lengths = [96] * 4 + [32] * 8  # ~640 tokens: tens of ms per run on an idle core
        features = self._pad([[self.tokenizer.cls_token_id or 101] + [1000 + (7 * i + j) % 20000
                              for j in range(n - 1)] for i, n in enumerate(lengths)])
        runners = {"onnx": self._run}
        self.backend = "torch"
        runners["torch"] = self._make_runner()
        times: dict[str, list[float]] = {name: [] for name in runners}
        with torch.inference_mode():
            for rep in range(3):  # interleaved, so a burst of load elsewhere hits both; the first is warm-up
                for name, run in runners.items():
                    t0 = time.perf_counter()
                    run(features)
                    if rep:
                        times[name].append(time.perf_counter() - t0)
        self.timings = {name: min(t) for name, t in times.items()}
        self.backend = min(self.timings, key=self.timings.get)
        self._run = runners[self.backend]
        _FASTER[key] = (self.backend, dict(self.timings), self.onnx_graph)
        _write_choice(key, _FASTER[key])
        log.info("encoder backend auto: %s (probe %s)", self.backend,
                 ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.timings.items()))

    def _replicas(self, hf: torch.nn.Module) -> list[tuple[torch.device, torch.nn.Module]]:
        """One model per visible GPU when the device is plain ``cuda`` and there are several; else the one."""
        import copy

        replicas = [(self.device, hf)]
        if self.device.type == "cuda" and self.device.index is None and dev.gpu_count() > 1:
            for i in range(1, dev.gpu_count()):
                target = torch.device("cuda", i)
                replicas.append((target, copy.deepcopy(hf).to(target).eval()))
        self._n_replicas = len(replicas)
        return replicas

    # ------------------------------------------------------------------ tokenization and batching

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (special tokens, truncated to the max sequence length), as sentence-transformers
        does it (its ``do_lower_case`` lives in the tokenizer's normalizer, so it applies here too)."""
        return self.tokenizer([t.strip() for t in texts], add_special_tokens=True, truncation=True, max_length=self.max_seq_length,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _pad(self, ids: list[list[int]]) -> dict[str, np.ndarray]:
        longest = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        features = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            features["token_type_ids"] = np.zeros_like(input_ids)
        return features

    def _batches(self, texts: Sequence[str], max_tokens: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], int]]:
        """``(row indices, padded features, real tokens)`` per batch: windows tokenized, sorted, budgeted."""
        for start in range(0, len(texts), self.window):
            ids = self._tokenize(texts[start:start + self.window])
            for batch in token_budget_batches([len(x) for x in ids], max_tokens):
                chunk = [ids[i] for i in batch]
                yield np.asarray(batch) + start, self._pad(chunk), sum(len(x) for x in chunk)

    # ------------------------------------------------------------------ encoding

    def _encode_model(self, texts: Sequence[str], max_tokens: int) -> np.ndarray:
        """Full-dimension vectors (normalized when the model normalizes) of ``texts``, running the model."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if self.device.type == "cpu":
            max_tokens = min(max_tokens, self.cpu_batch_tokens)
        batches = prefetch(self._batches(texts, max_tokens))
        with torch.inference_mode():
            if getattr(self, "_n_replicas", 1) > 1:
                self._encode_multi_gpu(batches, out)
            else:
                for rows, features, n_tokens in batches:
                    out[rows] = self._run(features).numpy()
                    self.stats["tokens"] += n_tokens
                    self.stats["batches"] += 1
        self.stats["texts_encoded"] += len(texts)
        return out

    def _encode_multi_gpu(self, batches: Iterator[tuple[np.ndarray, dict[str, np.ndarray], int]],
                          out: np.ndarray) -> None:
        """One worker thread per GPU replica pulling batches from the shared tokenizer stream."""
        from concurrent.futures import ThreadPoolExecutor

        source_lock = threading.Lock()

        def worker(replica: int) -> None:
            with torch.inference_mode():
                while True:
                    with source_lock:
                        item = next(batches, None)
                    if item is None:
                        return
                    rows, features, n_tokens = item
                    out[rows] = self._run(features, replica).numpy()  # type: ignore[call-arg]
                    with source_lock:
                        self.stats["tokens"] += n_tokens
                        self.stats["batches"] += 1

        with ThreadPoolExecutor(self._n_replicas) as pool_:
            for future in [pool_.submit(worker, r) for r in range(self._n_replicas)]:
                future.result()

    def encode(self, texts: Sequence[str], *, dim: int | None = None, normalize: bool = True,
               max_batch_tokens: int | None = None, cache: bool | EmbeddingCache | None = None) -> np.ndarray:
        """Embeddings of ``texts`` as float32 ``(n, dim)``, in input order.

        ``normalize=False`` returns the model's own output (normalized when the model ends in a Normalize
        module, as sentence-transformers does). ``cache``: ``None`` uses the encoder's setting, ``True`` the
        shared on-disk cache, ``False`` none, or a given :class:`EmbeddingCache`.
        """
        texts = list(texts)
        store = self.cache if cache is None else (shared_cache() if cache is True else (cache or None))
        budget = max_batch_tokens or self.max_batch_tokens
        if not texts:
            return truncate_normalize(np.zeros((0, self.dim), dtype=np.float32), dim, normalize)
        with self._lock:
            if store is None:
                full = self._encode_model(texts, budget)
            else:
                full, found = store.get(f"{self.model_id}-{self.variant}", self.dim, texts)
                missing = np.flatnonzero(~found)
                self.stats["cache_hits"] += len(texts) - len(missing)
                if len(missing):
                    todo = list(dict.fromkeys(texts[i] for i in missing))  # a repeated text is encoded once
                    fresh = self._encode_model(todo, budget)
                    where = {t: j for j, t in enumerate(todo)}
                    full[missing] = fresh[[where[texts[i]] for i in missing]]
                    store.put(f"{self.model_id}-{self.variant}", self.dim, todo, fresh)
        return truncate_normalize(full, dim, normalize)


_LOADED: dict[tuple[str, str, str, str], Encoder] = {}
_FASTER: dict[str, tuple[str, dict[str, float], str | None]] = {}
"""Backend ``auto`` chose for exact CPU encoding, per ``model id|CPU model``, with the probe timings and the ONNX
graph it was measured with."""


def _choices_path() -> Path:
    from embedforge.encoding.cache import default_root

    return default_root() / "encoder_backend.json"


def _read_choices() -> dict[str, tuple[str, dict[str, float], str | None]]:
    try:
        raw = json.loads(_choices_path().read_text())
        return {k: (v["backend"], dict(v["timings"]), v.get("onnx_graph")) for k, v in raw.items()
                if v.get("backend") in ("onnx", "torch")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_choice(key: str, choice: tuple[str, dict[str, float], str | None]) -> None:
    """Add one choice to the file (atomic rename; a concurrent writer's choice for another key may be lost, and is
    then measured again)."""
    from embedforge.data.shards import atomic_write_text

    choices = {k: {"backend": b, "timings": t, "onnx_graph": g} for k, (b, t, g) in {**_read_choices(), key: choice}.items()}
    try:
        _choices_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_choices_path(), json.dumps(choices, indent=1))
    except OSError as exc:  # a read-only cache: the choice holds for this process only
        log.debug("encoder backend choice not saved: %s", exc)


def get_encoder(model: str | Path, *, device: str = "auto", dtype: str = "fp32", backend: str = "auto",
                cache: bool | EmbeddingCache = False, role: str | None = None) -> Encoder:
    """A process-wide shared :class:`Encoder` per (model, device, dtype, backend, route): load a model once.

    ``cache`` sets the encoder's default cache only when it is first loaded; pass ``encode(..., cache=True)``
    to opt in per call on a shared encoder. ``role``: ``query`` or ``document`` (see :class:`Encoder`); a
    single-encoder model gives the same encoder for both.
    """
    path = resolve_model(str(model))
    key = (str(path), device, dtype, backend, route_of(path, role))
    if key not in _LOADED:
        _LOADED[key] = Encoder(model, device=device, dtype=dtype, backend=backend, cache=cache, role=role)
    return _LOADED[key]
