"""Shared fixtures: one local platform (one Spark session) for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.platform import activate

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _git_sha() -> Iterator[None]:
    """Training runs record this sha (and never ask git)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_SHA", "test-sha")
        yield


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """The local platform over a fresh state directory, active for the whole session."""
    local = LocalPlatform(
        "test", tmp_path_factory.mktemp("mlops-state"), sample_rows=3_000, shuffle_partitions=2
    )
    activate(local)
    yield local
    activate(None)
    local.stop()


@pytest.fixture(scope="session")
def spark(platform: LocalPlatform):
    return platform.spark
