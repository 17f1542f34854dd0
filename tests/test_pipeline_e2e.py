"""The whole pipeline job of the real bundle, run twice by the local runner, then every notebook."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_template.bundle.loader import ResolvedBundle, load_bundle
from mlops_template.bundle.runner import JobRunResult, LocalJobRunner, TaskStatus
from mlops_template.notebook import notebook_context
from mlops_template.platform import LocalPlatform
from mlops_template.registry.versions import get_aliases

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.py"))
WORSE = json.dumps({"n_estimators": 1, "num_leaves": 2})


@pytest.fixture(scope="module")
def bundle() -> ResolvedBundle:
    return load_bundle(PROJECT_ROOT, "dev")


def run_pipeline(platform: LocalPlatform, bundle: ResolvedBundle, **parameters: str) -> JobRunResult:
    runner = LocalJobRunner(bundle.resources["jobs"], platform.task_values, platform.state_dir / "runs")
    return runner.run("pipeline", parameters)


@pytest.fixture(scope="module")
def runs(platform: LocalPlatform, bundle: ResolvedBundle) -> tuple[JobRunResult, JobRunResult]:
    """A first run, then a run whose model is deliberately worse."""
    return run_pipeline(platform, bundle), run_pipeline(platform, bundle, training_params=WORSE)


def test_first_run_promotes_its_model_and_scores_every_trip(platform, runs):
    first, _ = runs
    errors = {t.task_key: t.error for t in first.tasks if t.error}
    assert first.succeeded, errors
    assert {t.task_key: t.status for t in first.tasks}["deploy_gate"] == TaskStatus.SUCCESS
    assert first.task("deploy_gate").outcome == "true"
    context = notebook_context()
    trips = platform.read_table(context.table("trips_clean")).count()
    predictions = platform.read_table(context.table("fare_predictions"))
    assert predictions.count() == trips
    assert {row[0] for row in predictions.select("model_version").distinct().collect()} == {1}


def test_a_worse_model_stays_challenger_and_the_champion_is_kept(platform, runs):
    _, second = runs
    assert second.succeeded
    assert second.task("validate_model").values["promoted"] == "false"
    assert second.task("deploy_gate").outcome == "false"
    aliases = get_aliases(notebook_context().model_name)
    assert aliases["champion"] == 1
    assert aliases["challenger"] == 2
    version = MlflowClient().get_model_version(notebook_context().model_name, "2")
    assert version.tags["gate_outcome"] == "rejected"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_on_the_local_platform(runs, notebook, monkeypatch):
    source = notebook.read_text()
    assert source.startswith("# Databricks notebook source\n")
    assert "# COMMAND ----------" in source
    monkeypatch.chdir(notebook.parent)
    runpy.run_path(str(notebook), run_name="__main__")
