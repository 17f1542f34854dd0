"""`mlops doctor`: preflight checks of the laptop (default) or of a Databricks workspace.

Each check is a small function returning a `CheckResult`: ok, warn or FAIL, what was found or
what is wrong, and the command that fixes it. `local.py` checks what `mlops run` and `mlops serve`
need; `workspace.py` checks, through the Databricks SDK, what `databricks bundle deploy` and the
bundle's jobs need.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome; `fix` is the command (or step) that fixes a problem."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.OK, detail)


def warn(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, Status.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, Status.FAIL, detail, fix)


def failed(results: list[CheckResult]) -> bool:
    return any(result.status is Status.FAIL for result in results)
