"""The only package that knows where the code runs: Databricks or the local laptop platform.

Job tasks call `get_platform()` and use its Spark session, table names, MLflow stores and task
values; they never branch on the platform themselves. The laptop platform is a separate package
(`mlops_laptop`, installed for development and tests, never in the wheel Databricks installs); it
registers itself under the entry point group `mlops_template.platform`, name `local`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any

from mlops_template.platform.base import MissingTableError, Platform
from mlops_template.platform.databricks import DatabricksPlatform, on_databricks

__all__ = [
    "DatabricksPlatform",
    "LaptopPlatformMissingError",
    "MissingTableError",
    "Platform",
    "activate",
    "activated",
    "current_user_name",
    "get_platform",
    "registered_for",
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
            _active = local_platform_type()(target or os.environ.get("MLOPS_TARGET", "dev"))
    return _active


class LaptopPlatformMissingError(RuntimeError):
    """Not on Databricks, and the laptop platform package is not installed."""


PLATFORM_ENTRY_POINTS = "mlops_template.platform"


def local_platform_type() -> type[Platform]:
    """The laptop platform's class, registered by the `mlops_laptop` package."""
    return _registered(
        PLATFORM_ENTRY_POINTS,
        "local",
        "not running on Databricks and the laptop platform is not installed: run `make install` "
        "in a checkout of the project (it installs the `mlops-laptop` package for development)",
    )


def registered_for(platform: Platform, group: str) -> Any:
    """What the package of a platform other than Databricks registers for it: the entry point of
    `group` named as the platform (e.g. the laptop platform's endpoint deployer).

    Services that differ per platform (the endpoint deployer, quality monitors) pick their
    implementation this way, so the platform package never imports them (no import cycle) and the
    wheel never imports the laptop package.
    """
    return _registered(
        group,
        platform.name,
        f"the {platform.name} platform's package registers no entry point `{platform.name}` in group "
        f"`{group}`: reinstall it (`make install`)",
    )


def _registered(group: str, name: str, missing: str) -> Any:
    found = entry_points(group=group, name=name)
    if not found:
        raise LaptopPlatformMissingError(missing)
    return next(iter(found)).load()


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
