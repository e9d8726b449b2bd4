"""embedforge: a domain corpus in, a domain-tuned embedding model and its embeddings out."""

import os as _os

# No model hub is ever used: models come from packages that ship weights, or from local paths.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
