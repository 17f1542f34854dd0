"""The only package that knows where the code runs: Databricks or the local laptop platform.

Job tasks call `get_platform()` and use its Spark session, table names, MLflow stores and task
values; they never branch on the platform themselves.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager

from mlops_template.platform.base import MissingTableError, Platform
from mlops_template.platform.databricks import DatabricksPlatform, on_databricks
from mlops_template.platform.local import LocalPlatform, LocalStateError

__all__ = [
    "DatabricksPlatform",
    "LocalPlatform",
    "LocalStateError",
    "MissingTableError",
    "Platform",
    "activate",
    "activated",
    "current_user_name",
    "get_platform",
]

_active: Platform | None = None


def activate(platform: Platform | None) -> None:
    """Make `platform` the one `get_platform()` returns (the local runner and tests do this)."""
    global _active
    _active = platform


def get_platform(target: str | None = None) -> Platform:
    """The active platform; otherwise Databricks when running there, else local for the target.

    The local target is `target`, else `$MLOPS_TARGET`, else dev; the platform created becomes active.
    """
    global _active
    if _active is None:
        if on_databricks():
            _active = DatabricksPlatform()
        else:
            _active = LocalPlatform(target or os.environ.get("MLOPS_TARGET", "dev"))
    return _active


def current_user_name() -> str:
    """The workspace user on Databricks (`${workspace.current_user.userName}`), else the login name."""
    if on_databricks():
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient().current_user.me().user_name or "user"
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no USER / LOGNAME variables
        return "user"


@contextmanager
def activated(platform: Platform) -> Iterator[Platform]:
    """Make `platform` active inside the block, then restore the one active before."""
    global _active
    previous, _active = _active, platform
    try:
        yield platform
    finally:
        _active = previous
