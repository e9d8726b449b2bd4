"""``embedforge push MODEL_DIR REPO_ID``: upload a trained model directory to the Hugging Face Hub.

The directory is what the train stage wrote (``runs/<job>/train-<hash>/model``): weights, tokenizer,
sentence-transformers files, ``onnx/model.onnx`` and the model card. Uploading is ``huggingface_hub``'s
``create_repo`` + ``upload_folder``; the token comes from ``HF_TOKEN`` or ``hf auth login``. ``--dry-run`` lists
what would be sent and touches nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PLACEHOLDER = "sentence_transformers_model_id"
"""What sentence-transformers' card writes where the Hub id belongs in its usage snippet."""
SKIP = ["checkpoint-*", "checkpoint-*/**", "runs/**", ".*", "**/.*"]
"""Never uploaded: trainer checkpoints, tensorboard logs, hidden files."""


def upload_plan(model_dir: Path) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file that would be uploaded."""
    from fnmatch import fnmatch

    files = []
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if not any(fnmatch(rel, pattern) for pattern in SKIP):
            files.append((rel, path.stat().st_size))
    return files


def push(model_dir: Annotated[Path, typer.Argument(help="Model directory (runs/<job>/train-<hash>/model)")],
         repo_id: Annotated[str, typer.Argument(help="Hub repository, e.g. my-org/my-domain-minilm")],
         private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a new repository")] = True,
         message: Annotated[str, typer.Option("--message", help="Commit message")] = "Upload embedforge model",
         dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="List the files; upload nothing")] = False,
         ) -> None:
    """Upload a trained model directory to the Hugging Face Hub (model card, weights, ONNX export)."""
    from embedforge.cli import fail
    from embedforge.models import HUB_ID
    from embedforge.progress import console

    if not (model_dir / "modules.json").is_file() or not (model_dir / "config.json").is_file():
        fail(f"{model_dir}: not a sentence-transformers model directory (no modules.json / config.json)")
    if "/" not in repo_id or not HUB_ID.match(repo_id):
        fail(f"repository id '{repo_id}' is not of the form owner/name")
    files = upload_plan(model_dir)
    total = sum(size for _, size in files)
    card = model_dir / "README.md"
    if card.is_file() and PLACEHOLDER in card.read_text(encoding="utf-8") and not dry_run:
        card.write_text(card.read_text(encoding="utf-8").replace(PLACEHOLDER, repo_id), encoding="utf-8")
    if dry_run:
        for rel, size in files:
            typer.echo(f"{size:>12,}  {rel}")
        typer.echo(f"would upload {len(files)} files ({total / 2**20:.1f} MiB) to "
                   f"https://huggingface.co/{repo_id} ({'private' if private else 'public'})")
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, commit_message=message, ignore_patterns=SKIP)
    except (HfHubHTTPError, OSError, ValueError) as exc:
        fail(f"push to {repo_id} failed: {str(exc).splitlines()[0]}", 1)
    console.print(f"pushed {len(files)} files ({total / 2**20:.1f} MiB) to {url}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("push")(push)
