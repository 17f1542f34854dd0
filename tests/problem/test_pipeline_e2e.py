"""The taxi example through the whole pipeline job of the real bundle, run three times by the local
runner, then every notebook.

Run 1 rejects its challenger (an impossible RMSE threshold): there is no champion yet. Run 2
promotes its model. Run 3 trains a deliberately worse model, which stays challenger.
"""

from __future__ import annotations

import json
import logging
import runpy
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_laptop.bundle.loader import ResolvedBundle, load_bundle
from mlops_laptop.bundle.runner import JobRunResult, LocalJobRunner, TaskStatus
from mlops_laptop.platform.local import LocalPlatform
from mlops_template.notebook import notebook_context
from mlops_template.registry.versions import get_aliases

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.py"))
REJECTED = json.dumps({"gate_max_rmse": 0.001})
WORSE = json.dumps({"n_estimators": 1, "num_leaves": 2})


@pytest.fixture(scope="module")
def bundle() -> ResolvedBundle:
    return load_bundle(PROJECT_ROOT, "dev")


def run_pipeline(platform: LocalPlatform, bundle: ResolvedBundle, **parameters: str) -> JobRunResult:
    runner = LocalJobRunner.for_bundle(bundle, platform.task_values, platform.state_dir / "runs")
    return runner.run("pipeline", parameters)


@pytest.fixture(scope="module")
def runs(platform: LocalPlatform, bundle: ResolvedBundle) -> dict[str, JobRunResult]:
    """A first run whose challenger is rejected, a promoting run, then a worse model; with the
    warnings the first run logged."""
    handler = _Collect()
    logging.getLogger("mlops_template").addHandler(handler)
    try:
        rejected = run_pipeline(platform, bundle, training_params=REJECTED)
    finally:
        logging.getLogger("mlops_template").removeHandler(handler)
    return {
        "rejected": rejected,
        "rejected_warnings": handler.messages,
        "promoted": run_pipeline(platform, bundle),
        "worse": run_pipeline(platform, bundle, training_params=WORSE),
    }


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _errors(result: JobRunResult) -> dict[str, str]:
    return {t.task_key: t.error or "" for t in result.tasks if t.error}


def test_a_first_run_whose_challenger_is_rejected_succeeds_and_scores_nothing(platform, runs):
    """Issue 11 §1.7: with no champion yet, batch_score says so and succeeds; so does the job."""
    first = runs["rejected"]
    assert first.succeeded, _errors(first)
    assert {t.task_key: t.status for t in first.tasks} == dict.fromkeys(
        ["prepare_data", "features", "publish_features", "train", "validate_model", "deploy", "batch_score"],
        TaskStatus.SUCCESS,
    )
    assert any("nothing scored" in m and "champion" in m for m in runs["rejected_warnings"])
    version = MlflowClient().get_model_version(notebook_context().model_name, "1")
    assert version.tags["gate_outcome"] == "rejected"


def test_the_next_run_promotes_its_model_and_scores_every_trip_with_it(platform, runs):
    second = runs["promoted"]
    assert second.succeeded, _errors(second)
    assert get_aliases(notebook_context().model_name)["champion"] == 2
    context = notebook_context()
    trips = platform.read_table(context.table("trips_clean")).count()
    predictions = platform.read_table(context.table("fare_predictions"))
    assert predictions.count() == trips
    assert {row[0] for row in predictions.select("model_version").distinct().collect()} == {2}


def test_a_worse_model_stays_challenger_and_the_champion_is_kept(platform, runs):
    """validate_model judges the `challenger` alias (durable state, no task value); deploy runs
    every time and keeps serving the champion."""
    third = runs["worse"]
    assert third.succeeded, _errors(third)
    assert all(task.values == {} for task in third.tasks)  # wheel tasks set no task values
    aliases = get_aliases(notebook_context().model_name)
    assert aliases["champion"] == 2
    assert aliases["challenger"] == 3
    version = MlflowClient().get_model_version(notebook_context().model_name, "3")
    assert version.tags["gate_outcome"] == "rejected"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_on_the_local_platform(runs, notebook, monkeypatch):
    source = notebook.read_text()
    assert source.startswith("# Databricks notebook source\n")
    assert "# COMMAND ----------" in source
    monkeypatch.chdir(notebook.parent)
    runpy.run_path(str(notebook), run_name="__main__")
