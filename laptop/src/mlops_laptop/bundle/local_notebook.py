"""Run a Databricks source-format notebook (`.py`) locally, cell by cell, in one namespace.

A source notebook starts with `# Databricks notebook source` and separates cells with
`# COMMAND ----------`; magic cells are written as `# MAGIC %<command>` lines. Locally, `%pip`
cells are skipped (the package is installed in this environment) and `%md` cells are
documentation; any other magic command (`%sql`, `%sh`, `%run`, ...) is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOTEBOOK_HEADER = "# Databricks notebook source"
CELL_SEPARATOR = "# COMMAND ----------"
MAGIC_PREFIX = "# MAGIC"
SKIPPED_MAGICS = frozenset({"%pip", "%md", "%md-sandbox"})


class NotebookError(ValueError):
    """The file is not a source notebook the local runner can run."""


@dataclass(frozen=True)
class Cell:
    number: int  # 1-based, as the notebook UI counts
    source: str

    @property
    def magic(self) -> str | None:
        """The magic command (`%pip`, `%md`, ...) of a magic cell, else None."""
        lines = [line for line in self.source.splitlines() if line.strip()]
        if not lines or not lines[0].startswith(f"{MAGIC_PREFIX} %"):
            return None
        return lines[0].removeprefix(MAGIC_PREFIX).split()[0]


def read_cells(path: Path) -> list[Cell]:
    """The cells of the source notebook at `path`, or a NotebookError saying why it is not one."""
    if path.suffix != ".py":
        raise NotebookError(f"{path}: the local runner runs Python source notebooks (.py) only")
    if not path.is_file():
        raise NotebookError(f"notebook {path} not found")
    text = path.read_text(encoding="utf-8")
    first, _, body = text.partition("\n")
    if first.strip() != NOTEBOOK_HEADER:
        raise NotebookError(f"{path} is not a Databricks notebook: its first line is not '{NOTEBOOK_HEADER}'")
    sources = [chunk.strip("\n") for chunk in body.split(f"\n{CELL_SEPARATOR}\n")]
    return [Cell(number, source) for number, source in enumerate(sources, start=1) if source.strip()]


def run_notebook(path: Path, dbutils: Any) -> None:
    """Execute the notebook's Python cells in order, with `dbutils` as a global, from its folder."""
    cells = read_cells(path)
    for cell in cells:
        if cell.magic is not None and cell.magic not in SKIPPED_MAGICS:
            raise NotebookError(
                f"{path} cell {cell.number}: magic command {cell.magic} is not supported locally "
                "(Python cells run; %pip cells are skipped and %md cells are documentation)"
            )
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(path), "dbutils": dbutils}
    with _working_directory(path.parent):
        for cell in cells:
            if cell.magic is not None:
                log.debug("%s cell %d: %s skipped locally", path.name, cell.number, cell.magic)
                continue
            exec(compile(cell.source, f"{path} (cell {cell.number})", "exec"), namespace)


@contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    """A notebook runs from its own folder, as on Databricks (workspace files)."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
