"""Entry points for the runner tests, installed through a dist-info folder on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlops_template.platform import get_platform
from mlops_template.tasks.common import parse_arguments


def record() -> None:
    """Append `<task> <args>` to $RUNNER_LOG and set task values given as --set-NAME=VALUE."""
    arguments = parse_arguments(sys.argv[1:])
    with Path(os.environ["RUNNER_LOG"]).open("a") as log:
        log.write(f"{arguments.get('name', '?')} {sorted(arguments.items())}\n")
    for key, value in arguments.items():
        if key.startswith("set_"):
            get_platform().task_values.set(key.removeprefix("set_"), int(value) if value.isdigit() else value)


def fail() -> None:
    """Always fails, like a task with a bug."""
    raise ValueError("the task failed on purpose")


def exit_nonzero() -> None:
    """Exits with status 3, like a script calling sys.exit."""
    raise SystemExit(3)
