"""``embedforge serve MODEL_DIR``: an OpenAI-compatible embeddings server for a model directory."""

from __future__ import annotations

from typing import Annotated

import typer

from embedforge.commands import fail
from embedforge.progress import console


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
        model_dir: Annotated[str, typer.Argument(help="Sentence-transformers model directory (e.g. the train stage's "
                                                 "<out>/model) or a packaged model name")],
        host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 to accept remote clients)")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
        api_key_env: Annotated[str | None, typer.Option(help="Name of an environment variable holding the API key; "
                                                        "clients must send 'Authorization: Bearer <key>'. Without "
                                                        "it, no auth")] = None,
        served_model_name: Annotated[str | None, typer.Option(help="Model name reported and accepted")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
        dtype: Annotated[str, typer.Option(help="auto (bf16/fp16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16")] = "auto",
        backend: Annotated[str, typer.Option(help="Encoder backend: auto (ONNX Runtime on CPU when installed) | "
                                             "torch | onnx | st")] = "auto",
        max_inputs: Annotated[int, typer.Option(help="Most texts per request (400 above)")] = 256,
        max_tokens_per_input: Annotated[int | None, typer.Option(help="Token limit per text, special tokens included "
                                                                 "(default: the model's max_seq_length)")] = None,
        max_chars_per_input: Annotated[int | None, typer.Option(help="Character limit per text (default: 16 per "
                                                                "token of the token limit)")] = None,
        on_too_long: Annotated[str, typer.Option(help="error (413) | truncate, for texts over the limits")] = "error",
        public_docs: Annotated[bool, typer.Option(help="Serve /docs, /redoc and /openapi.json without the API "
                                                  "key")] = False,
        max_body_bytes: Annotated[int, typer.Option(help="Largest request body (413 above)")] = 8 * 1024 * 1024,
        max_batch_tokens: Annotated[int, typer.Option(help="Token budget of one merged model batch")] = 16384,
        max_wait_ms: Annotated[float, typer.Option(help="Longest wait for requests to share a batch")] = 5.0,
        max_queue: Annotated[int, typer.Option(help="Waiting requests before answering 503")] = 1024,
        threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default: torch's choice)")] = None,
        log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
        access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn access log)")] = False,
) -> None:
    """Serve MODEL_DIR: POST /v1/embeddings (OpenAI API), GET /v1/models, /health, /metrics."""
    from embedforge.models import resolve_model
    from embedforge.progress import setup_logging
    from embedforge.serving.auth import api_key_from_env
    from embedforge.serving.config import ServeConfig
    from embedforge.serving.model_dir import ModelDirError, check_model_dir

    setup_logging(log_level.upper())
    try:  # cheap checks first, before torch is imported
        config = ServeConfig(
            model=model_dir,
            host=host,
            port=port,
            api_key=api_key_from_env(api_key_env),
            served_model_name=served_model_name,
            device=device,
            dtype=dtype,
            backend=backend,
            max_inputs=max_inputs,
            max_tokens_per_input=max_tokens_per_input,
            max_chars_per_input=max_chars_per_input,
            on_too_long=on_too_long,
            public_docs=public_docs,
            max_body_bytes=max_body_bytes,  # type: ignore[arg-type]
            max_batch_tokens=max_batch_tokens,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            threads=threads,
        )
        config.validate()
        check_model_dir(resolve_model(model_dir))

        import uvicorn

        from embedforge.serving.app import create_app

        app = create_app(config)
    except (ModelDirError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
    if config.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] serving on {host} without an API key (use --api-key-env)")
    console.print(
        f"embedforge serve: {app.state.model.name} at http://{host}:{port}/v1 "
        f"(auth {'on' if config.api_key else 'off'})",
        highlight=False,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=10,
        access_log=access_log,
    )
