"""Shared fixtures: one local platform (one Spark session) for the whole test session, and the
prepared and feature tables of the churn problem (tests/churn) and its regression flavour
(tests/regression_spec.py), made once by the pipeline's own tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import regression_spec
from churn_example.spec import generate_events
from mlops_laptop.platform.local import LocalPlatform
from mlops_template.platform import activate
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.tasks import features, prepare_data

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHURN_REFERENCE = "churn_example.spec:PROBLEM"
CHURN_SCHEMA = "test.churn_tables"
CHURN_EVENTS = 2_000


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


@pytest.fixture(scope="session")
def churn_schema(platform: LocalPlatform) -> str:
    """`CHURN_SCHEMA` holding both problems' prepared tables (`churn_events`, `bill_events`) and
    their shared feature table `customer_activity`, from 2,000 generated churn events."""
    source = f"{CHURN_SCHEMA}.source_events"
    platform.save_table(generate_events(platform.spark, rows=CHURN_EVENTS, seed=42), source)
    arguments = {"schema": CHURN_SCHEMA}
    with pytest.MonkeyPatch.context() as patch:
        for reference in (regression_spec.REFERENCE, CHURN_REFERENCE):
            patch.setenv(PROBLEM_VARIABLE, reference)
            prepare_data.run(
                platform, prepare_data.PrepareDataConfig.model_validate({**arguments, "source_table": source})
            )
        features.run(platform, features.FeaturesConfig.model_validate(arguments))  # as churn: same table
    return CHURN_SCHEMA
