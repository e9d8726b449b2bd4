"""``embedforge schema``: the JSON Schema of a job spec, from the same pydantic models that validate it.

Editors complete and check job files with it, e.g. VS Code's YAML extension with the first line
``# yaml-language-server: $schema=embedforge.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def job_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a job file: the top-level fields and every stage's settings."""
    from pydantic import ConfigDict, Field, create_model

    from embedforge.spec import JobSpec
    from embedforge.stages import STAGES

    stages = create_model(
        "Stages", __config__=ConfigDict(extra="forbid"),
        **{s.name: (s.config | None, Field(None, description=(s.config.__doc__ or "").strip())) for s in STAGES})
    schema = JobSpec.model_json_schema()
    stage_schema = stages.model_json_schema()
    defs = {**schema.pop("$defs", {}), **stage_schema.pop("$defs", {})}
    stage_schema.pop("title", None)
    stage_schema["description"] = schema["properties"]["stages"].get("description", "")
    schema["properties"]["stages"] = stage_schema
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "embedforge job spec", **schema,
            "$defs": defs}


def schema(out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout")] = None,
           ) -> None:
    """Print the job spec's JSON Schema (for editor completion and checking of job files)."""
    text = json.dumps(job_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(f"{out}: JSON Schema of the job spec; first line of a job file for editors: "
               f"# yaml-language-server: $schema={out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
