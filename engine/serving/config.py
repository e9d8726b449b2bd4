"""Settings of the embeddings server (command-line options of ``embedforge serve``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TooLongPolicy = Literal["error", "truncate"]


@dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs besides the loaded model. Checked by :meth:`validate`."""

    model: str
    """Model directory (a sentence-transformers directory) or a packaged model name."""
    host: str = "127.0.0.1"
    """Interface to bind; the default accepts local connections only."""
    port: int = 8000
    """TCP port."""
    api_key: str | None = field(default=None, repr=False)
    """Bearer token clients must send; ``None``: no auth. Read from an environment variable, never argv."""
    served_model_name: str | None = None
    """Name reported by /v1/models and accepted in ``model``; default derived from the model argument."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``."""
    dtype: str = "auto"
    """``auto`` (bf16/fp16 on GPU, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``."""
    backend: str = "auto"
    """Encoder backend: ``auto`` (ONNX Runtime for fp32 on CPU when installed, else torch), ``torch``,
    ``onnx``, ``onnx-int8`` (lossy) or ``st``; see :class:`embedforge.encoding.encoder.Encoder`."""
    max_inputs: int = 256
    """Most texts accepted in one request (400 above)."""
    max_tokens_per_input: int | None = None
    """Token limit per text, special tokens included; ``None`` = the model's max_seq_length."""
    max_chars_per_input: int | None = None
    """Character limit per text (``None``: 16 per token of the token limit). Checked before tokenizing: a long
    run without spaces is one unknown token to the tokenizer, so a token limit alone does not bound it."""
    on_too_long: TooLongPolicy = "error"
    """``error``: answer 413 when a text exceeds a limit; ``truncate``: embed its first characters and tokens."""
    public_docs: bool = False
    """Serve ``/docs``, ``/redoc`` and ``/openapi.json`` without the API key (they follow auth by default)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted (413 above)."""
    max_batch_tokens: int = 16384
    """Token budget of one merged model batch (sum over the texts of all merged requests)."""
    max_wait_ms: float = 5.0
    """How long the first queued request waits for others to share its batch."""
    max_queue: int = 1024
    """Requests waiting for the model before the server answers 503."""
    threads: int | None = None
    """Torch intra-op threads (``None`` keeps torch's default)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option at fault."""
        checks = [
            (1 <= self.port <= 65535, f"--port must be in 1..65535 (got {self.port})"),
            (self.max_inputs >= 1, f"--max-inputs must be >= 1 (got {self.max_inputs})"),
            (
                self.max_tokens_per_input is None or self.max_tokens_per_input >= 2,
                f"--max-tokens-per-input must be >= 2 (got {self.max_tokens_per_input})",
            ),
            (
                self.max_chars_per_input is None or self.max_chars_per_input >= 16,
                f"--max-chars-per-input must be >= 16 (got {self.max_chars_per_input})",
            ),
            (
                self.on_too_long in ("error", "truncate"),
                f"--on-too-long must be 'error' or 'truncate' (got {self.on_too_long!r})",
            ),
            (self.max_body_bytes >= 1024, f"--max-body-bytes must be >= 1024 (got {self.max_body_bytes})"),
            (self.max_batch_tokens >= 1, f"--max-batch-tokens must be >= 1 (got {self.max_batch_tokens})"),
            (self.max_wait_ms >= 0, f"--max-wait-ms must be >= 0 (got {self.max_wait_ms})"),
            (self.max_queue >= 1, f"--max-queue must be >= 1 (got {self.max_queue})"),
            (self.api_key is None or len(self.api_key) > 0, "the API key is empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        from embedforge.device import check_device_string

        try:
            check_device_string(self.device)
        except ValueError as exc:
            raise ValueError(f"--device: {exc}") from None
