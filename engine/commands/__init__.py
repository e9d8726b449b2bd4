"""CLI command groups beyond the core (validate/run/status). Each module has ``register(app)``.

Modules must import heavy libraries inside the command functions, so ``embedforge --help`` stays fast.
"""

COMMAND_MODULES: list[str] = ["serve", "submit", "evaluate", "vocab", "embed", "datasets", "schema"]
"""Modules under ``embedforge.commands`` whose ``register(app)`` adds commands to the CLI."""
