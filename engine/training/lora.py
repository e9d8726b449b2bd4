"""LoRA via peft: low-rank adapters on the transformer's linear layers, merged into the weights before saving.

Merging gives a plain model directory (``model.safetensors``) that loads without peft and encodes exactly like the
adapted model (checked in the tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedforge import device as dev

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def add_lora(model: SentenceTransformer, r: int, alpha: int, dropout: float) -> int:
    """Add a fresh LoRA adapter (only its weights train); returns the number of trainable parameters."""
    peft = dev.optional_import("peft", "LoRA training (train.mode: lora)")
    config = peft.LoraConfig(task_type=peft.TaskType.FEATURE_EXTRACTION, r=r, lora_alpha=alpha,
                             lora_dropout=dropout)
    model.add_adapter(config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: SentenceTransformer) -> int:
    """Fold every LoRA layer into its base weights and drop the adapter; returns the layers merged."""
    tuners = dev.optional_import("peft.tuners.tuners_utils", "LoRA merging")
    merged = 0
    for module in model.modules():
        auto = getattr(module, "auto_model", None)
        if auto is None:
            continue
        for name, layer in list(auto.named_modules()):
            if isinstance(layer, tuners.BaseTunerLayer):
                layer.merge()
                parent_name, _, child = name.rpartition(".")
                parent = auto.get_submodule(parent_name) if parent_name else auto
                setattr(parent, child, layer.get_base_layer())
                merged += 1
        auto._hf_peft_config_loaded = False
        if hasattr(auto, "peft_config"):
            del auto.peft_config
    for p in model.parameters():
        p.requires_grad_(True)
    return merged
