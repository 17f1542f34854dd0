"""The CLI's rich output, loaded on first use: importing `rich.console` costs about as much as typer.

`mlops --help` and commands that print nothing through rich never import it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def console() -> Console:
    """Standard output."""
    from rich.console import Console

    return Console()


@cache
def error_console() -> Console:
    """Standard error."""
    from rich.console import Console

    return Console(stderr=True)


def escape(text: str) -> str:
    """`text` with rich markup escaped, to print as is."""
    from rich.markup import escape

    return escape(text)
