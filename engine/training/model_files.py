"""The files of a saved model directory that other tools read without embedforge.

- ``README.md``: the model card built by sentence-transformers' own ``SentenceTransformerModelCardData`` and
  ``generate_model_card`` (Hub metadata: base_model, license, language, datasets, tags, and a ``model-index`` with
  nDCG@10 / recall@10 / MRR@10 per Matryoshka dimension), followed by embedforge's validation table and lineage
  (no absolute paths: they would only describe the machine that trained it).
- ``config_sentence_transformers.json``: the prompts the model was trained with (``prompts``) and the Matryoshka
  dimensions it was trained for (``matryoshka_dims``; sentence-transformers ignores keys it does not know).
- ``onnx/model.onnx``: the transformer exported where ``SentenceTransformer(path, backend="onnx")`` (Optimum's
  ``ORTModelForFeatureExtraction``) looks for it: inputs ``input_ids``/``attention_mask``/``token_type_ids``,
  output ``last_hidden_state``, dynamic batch and sequence axes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("embedforge.train")

_ABSOLUTE = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:)?/(?:[^\s`'\"|)(\]\[,]+/)+([^\s`'\"|)(\]\[,/]+)")


def portable(text: str) -> str:
    """Absolute paths in ``text`` → their last component (``/home/me/runs/x/chunk-1`` → ``chunk-1``)."""
    return _ABSOLUTE.sub(r"\1", text)


def _dim_metrics(metrics: dict[str, float], dim: int) -> dict[str, float]:
    """``{"val_ndcg@10_d384": .7, …}`` → ``{"ndcg@10": .7, …}`` for one dimension."""
    suffix = f"_d{dim}"
    return {key[len("val_"):-len(suffix)]: float(value) for key, value in metrics.items()
            if key.startswith("val_") and key.endswith(suffix) and isinstance(value, (int, float))}


def _dim_evaluator(dim: int, dataset: str) -> Any:
    """A stand-in evaluator that carries one dimension's measured metrics into sentence-transformers' card."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    class MatryoshkaDimension(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.name = f"{dataset}_dim_{dim}"
            self.primary_metric = f"{self.name}_cosine_ndcg@10"

        @property
        def description(self) -> str:
            return "Information Retrieval"

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict:
            raise NotImplementedError("holds metrics measured by embedforge's validation")

        def get_config_dict(self) -> dict[str, Any]:
            return {"truncate_dim": dim}

    return MatryoshkaDimension()


def save_in_place(model: Any, model_dir: Path) -> None:
    """Save the ``SentenceTransformer`` ``model`` over ``model_dir``: a fresh save next to it, then its files
    moved in, so no module folder of the old numbering stays behind."""
    import shutil

    staged = model_dir.with_name(model_dir.name + ".staged")
    shutil.rmtree(staged, ignore_errors=True)
    model.save(str(staged))
    for item in model_dir.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    for item in staged.iterdir():
        item.rename(model_dir / item.name)
    staged.rmdir()


def _short_word_weights(card: str) -> str:
    """sentence-transformers prints a ``WordWeights`` module with its whole vocabulary and weights (~1.2 MB for
    a 30k vocabulary, one line) in the card's architecture block; keep one short line instead."""
    lines = card.split("\n")
    for i, line in enumerate(lines):
        if "WordWeights({" in line and len(line) > 300:
            lines[i] = line[:line.index("WordWeights(")] + "WordWeights(per-token weights: the WordWeights module folder)"
    return "\n".join(lines)


def write_model_card(model_dir: Path, *, title: str, base_model: str | None, dims: list[int],
                     metrics: dict[str, float], extra_markdown: str, language: str | list[str] | None = "en",
                     license: str | None = None, dataset: str = "synthetic-validation", base_kept: bool = False) -> str:
    """Write ``README.md``: sentence-transformers' card for the model in ``model_dir`` plus ``extra_markdown``.
    ``base_kept``: the weights are ``base_model``'s, unchanged (the regression guard kept it), so the card's first
    sentence says so instead of "finetuned from"; ``base_model`` stays in the metadata as the weights' source."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import generate_model_card
    from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

    card_data = SentenceTransformerModelCardData(
        language=language, license=license, model_name=title, local_files_only=True, generate_widget_examples=False,
        tags=["sentence-transformers", "sentence-similarity", "feature-extraction", "dense", "matryoshka",
              "embedforge"])
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True, model_card_data=card_data)
    card_data.base_model = base_model
    card_data.ir_model = True
    for dim in dims:
        evaluator = _dim_evaluator(dim, dataset)
        values = _dim_metrics(metrics, dim)
        card_data.set_evaluation_metrics(evaluator, {f"{evaluator.name}_cosine_{k}": v for k, v in values.items()})
    generated = _short_word_weights(generate_model_card(model))
    if base_kept:
        generated = generated.replace(" model finetuned from [", " model with the unchanged weights of [", 1)
    text = portable(generated).rstrip() + "\n\n" + portable(extra_markdown).strip() + "\n"
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    return text


def declare_matryoshka(model_dir: Path, dims: list[int], prompts: dict[str, str] | None = None) -> dict[str, Any]:
    """Record the Matryoshka dimensions and the prompts in ``config_sentence_transformers.json``."""
    path = model_dir / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["prompts"] = dict(prompts or config.get("prompts") or {})
    config.setdefault("default_prompt_name", None)
    config["matryoshka_dims"] = sorted(set(dims), reverse=True)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


def export_onnx(model_dir: Path) -> Path:
    """``onnx/model.onnx`` inside ``model_dir``: its transformer exported (fp32) by the encoder's exporter."""
    from transformers import AutoModel, AutoTokenizer

    from embedforge.encoding.onnx_runtime import export_onnx as export_graph

    transformer_dir = model_dir
    modules = model_dir / "modules.json"
    if modules.is_file():  # the Transformer module may live in a sub-folder
        first = json.loads(modules.read_text())[0]
        transformer_dir = model_dir / first.get("path", "")
    tokenizer = AutoTokenizer.from_pretrained(str(transformer_dir))
    model = AutoModel.from_pretrained(str(transformer_dir))
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    with warnings.catch_warnings():
        if not os.environ.get("EMBEDFORGE_VERBOSE"):  # the tracer's advice concerns the exporter, not the user
            warnings.simplefilter("ignore")
        return export_graph(model, names, model_dir / "onnx" / "model.onnx")


def card_license(model_dir: Path) -> str | None:
    """The ``license`` of the model card (``README.md`` front matter) in ``model_dir``, if it declares one: a tuned
    model is a derivative of its start model and carries the same license unless its owner says otherwise."""
    import yaml

    readme = Path(model_dir) / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return str(value) if value else None


def finish_model_dir(model_dir: Path, *, title: str, base_model: str | None, dims: list[int],
                     metrics: dict[str, float], extra_markdown: str, prompts: dict[str, str] | None = None,
                     onnx: bool = True, base_kept: bool = False, license: str | None = None) -> None:
    """All of the above for a freshly saved model directory. ``license``: the card's license (default: the one
    the saved model's own card declares, i.e. the start model's)."""
    license = license or card_license(model_dir)
    declare_matryoshka(model_dir, dims, prompts)
    if onnx:
        export_onnx(model_dir)
    write_model_card(model_dir, title=title, base_model=base_model, dims=dims, metrics=metrics,
                     extra_markdown=extra_markdown, base_kept=base_kept, license=license)
