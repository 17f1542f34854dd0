"""What every `mlops` sub-command shares: the target and variable options, and how it fails."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops_laptop.console import error_console, escape

TargetOption = Annotated[
    str | None, typer.Option("--target", "-t", help="Bundle target (default: the bundle's default).")
]
VarOption = Annotated[
    list[str] | None, typer.Option("--var", help="Override a bundle variable: name=value (repeatable).")
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as an error (as is, no markup) and return the exit to raise."""
    error_console().print(f"[bold red]Error:[/] {escape(message)}")
    return typer.Exit(code)
