"""CLI command groups beyond the core (validate/run/status). Each module has ``register(app)``.

Modules must import heavy libraries inside the command functions, so ``embedforge --help`` stays fast. Every
command reports bad input with :func:`fail`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import typer

COMMAND_MODULES: list[str] = ["serve", "submit", "evaluate", "vocab", "embed", "datasets", "schema", "init", "push"]
"""Modules under ``embedforge.commands`` whose ``register(app)`` adds commands to the CLI."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear one-line error and exit with ``code`` (2: bad input, 1: the work failed), no traceback."""
    import typer
    from rich.markup import escape

    from embedforge.progress import console

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # brackets are text
    raise typer.Exit(code)


def add_group(app: typer.Typer, name: str, help: str, commands: dict[str, Callable[..., Any]]) -> None:
    """Add ``embedforge NAME SUB…``: a command group (help when called bare) with ``commands`` as sub-commands."""
    import typer

    group = typer.Typer(no_args_is_help=True, help=help)
    for sub, command in commands.items():
        group.command(sub)(command)
    app.add_typer(group, name=name)
