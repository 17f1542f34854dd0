"""The only package that knows where the code runs: Databricks or the local laptop platform.

Job tasks call `get_platform()` and use its Spark session, table names, MLflow stores and task
values; they never branch on the platform themselves.
"""

from __future__ import annotations

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
    "get_platform",
]

_active: Platform | None = None


def activate(platform: Platform | None) -> None:
    """Make `platform` the one `get_platform()` returns (the local runner and tests do this)."""
    global _active
    _active = platform


def get_platform() -> Platform:
    """The active platform; otherwise Databricks when running there, else local for `$MLOPS_TARGET`."""
    global _active
    if _active is None:
        if on_databricks():
            _active = DatabricksPlatform()
        else:
            _active = LocalPlatform(os.environ.get("MLOPS_TARGET", "dev"))
    return _active


@contextmanager
def activated(platform: Platform) -> Iterator[Platform]:
    """Make `platform` active inside the block, then restore the one active before."""
    global _active
    previous, _active = _active, platform
    try:
        yield platform
    finally:
        _active = previous
