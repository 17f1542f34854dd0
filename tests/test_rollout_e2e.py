"""Progressive delivery end to end on the laptop, through the bundle's real jobs.

The regression flavour of the churn spec (tests/regression_spec.py) with `rollout=ab_test`, keyed by
the customer id (a request input: the models look their features up, and the A/B model takes only
the champion's columns, as on Databricks), half the keys to the challenger. The pipeline job trains
version 1 (promoted: no champion), then version 2 (the same data and parameters: as good, not
clearly better -> `experiment`), which the deploy task serves beside the champion in the sticky A/B
model. `mlops simulate-traffic` sends held-out rows through the served endpoint (as `mlops serve`
serves it) and writes ground truth in which the challenger's live error is doubled; the monitoring
job's `unpack` task reads it and the `rollout` job rolls version 2 back. A third training (version
3) is tried the same way with its error halved and promoted. Each decision run twice changes nothing
the second time; the rollout job with `action=rollback` (what `mlops model rollback` runs) serves
the previous champion again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import typer
from mlflow import MlflowClient
from pyspark.sql import functions as F
from typer.testing import CliRunner

import regression_spec
from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.bundle.runner import JobRunResult, LocalJobRunner
from mlops_laptop.monitoring.cli import simulate_traffic
from mlops_laptop.monitoring.ground_truth import ground_truth_dir
from mlops_laptop.pipeline_names import pipeline_names
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.serving.app import create_app
from mlops_laptop.serving.control_plane import ServingSettings
from mlops_laptop.serving.local_deploy import deployed_endpoint
from mlops_laptop.serving.local_host import acquire_control_plane, open_control_plane
from mlops_laptop.serving.server import LocalServer
from mlops_template.pipeline_names import PipelineNames
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.registry.experiment import (
    EXPERIMENT,
    ROLLOUT_OUTCOME_TAG,
    ROLLOUT_PROMOTED,
    ROLLOUT_ROLLED_BACK,
)
from mlops_template.registry.versions import CHALLENGER, CHAMPION, GATE_OUTCOME_TAG, PROMOTED, get_aliases
from mlops_template.serving.ab_model import challenger_rows
from mlops_template.serving.spec import ab_model_name

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARE = 0.5
AB_KEY = "customer_id"  # a request input of the regression spec: the deploy task refuses any other
VARIABLES = {
    "source_table": regression_spec.PROBLEM.sample_table,
    "schema": "suite_rollout",
    "model_name": "suite_rollout_bill",
    "endpoint_name": "rollout-test",
    "inference_table_prefix": "rollout_endpoint",
    "experiment_name": "/Shared/test-rollout",
    "rollout": "ab_test",
    "ab_key_column": AB_KEY,
    "challenger_percent": str(round(SHARE * 100)),
    "rollout_params": json.dumps(
        {"min_labelled": 60, "min_duration_hours": 0, "min_requests": 30, "bootstrap_resamples": 1000}
    ),
}
REQUESTS = 250  # 1-4 rows each: ~300 labelled rows per variant


@dataclass
class Delivery:
    """The target's names, its job runner and the served configs seen along the way."""

    names: PipelineNames
    runner: LocalJobRunner
    platform: LocalPlatform

    def run(self, job: str, parameters: dict[str, str] | None = None) -> JobRunResult:
        result = self.runner.run(job, parameters)
        assert result.succeeded, {t.task_key: t.error for t in result.tasks if t.error}
        return result

    def served(self) -> list[tuple[str, str, int]]:
        """(entity name, version, traffic %) of each served entity of the endpoint."""
        endpoint = deployed_endpoint(self.platform, self.names.endpoint)
        assert endpoint is not None and endpoint.config is not None
        routes = {r.served_entity_name: r.traffic_percentage for r in endpoint.config.traffic_config.routes}
        return [(e.entity_name, e.entity_version, routes[e.name]) for e in endpoint.config.served_entities]

    def observe(self) -> Observed:
        return Observed(self.served(), get_aliases(self.names.model_name))

    def tags(self, version: int) -> dict[str, str]:
        return MlflowClient().get_model_version(self.names.model_name, str(version)).tags

    def traffic(self, challenger_error_scale: float, seed: int) -> str:
        """`mlops simulate-traffic` against the endpoint served as `mlops serve` serves it, with a
        fresh ground truth (the scenarios send the same held-out rows with other labels)."""
        shutil.rmtree(
            ground_truth_dir(self.platform.state_dir, self.names.monitoring_tables.ground_truth),
            ignore_errors=True,
        )
        app = typer.Typer()
        app.command()(simulate_traffic)
        lock = acquire_control_plane(self.platform.state_dir)
        try:
            control_plane = open_control_plane(
                self.platform.state_dir, ServingSettings(table_flush_seconds=0.2)
            )
            with (
                pytest.MonkeyPatch.context() as patch,
                LocalServer(create_app(control_plane=control_plane)) as server,
            ):
                patch.setenv("MLOPS_HOME", str(self.platform.state_dir.parent))
                arguments = [
                    "-t",
                    self.platform.target,
                    "--url",
                    server.url,
                    "--endpoint",
                    self.names.endpoint,
                ]
                arguments += ["--requests", str(REQUESTS), "--seed", str(seed)]
                arguments += ["--population", str(self.platform.sample_rows)]
                arguments += ["--challenger-error-scale", str(challenger_error_scale)]
                result = CliRunner().invoke(app, arguments)
        finally:
            lock.release()
        assert result.exit_code == 0, result.output
        return result.output

    def unpack(self) -> None:
        """The monitoring job's `unpack` task, alone (its other tasks judge drift, not the rollout)."""
        job = self.runner.jobs["monitoring"]
        [task] = [t for t in job["tasks"] if t["task_key"] == "unpack"]
        alone = LocalJobRunner(
            {"monitoring": {**job, "tasks": [task]}}, self.runner.task_values, self.runner.runs_dir
        )
        result = alone.run("monitoring")
        assert result.succeeded, [t.error for t in result.tasks]

    def monitoring_rows(self) -> pd.DataFrame:
        rows = self.platform.read_table(self.names.monitoring_tables.monitoring)
        return rows.where(F.col("status_code") == 200).toPandas()


@dataclass(frozen=True)
class Observed:
    """What each step left: served entities, aliases and tags."""

    served: list[tuple[str, str, int]]
    aliases: dict[str, int]


@pytest.fixture(scope="module")
def delivery(platform: LocalPlatform) -> Iterator[Delivery]:
    bundle = load_bundle(PROJECT_ROOT, "dev", VARIABLES)
    runner = LocalJobRunner.for_bundle(bundle, platform.task_values, platform.state_dir / "runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROBLEM_VARIABLE, regression_spec.REFERENCE)
        yield Delivery(pipeline_names(bundle), runner, platform)


def experiment(
    delivery: Delivery, version: str, *, challenger_error_scale: float, seed: int
) -> dict[str, Observed]:
    """A pipeline run training `version`, traffic with the challenger's error scaled, the monitoring
    job's unpack, then the rollout job twice: what each step left."""
    delivery.run("pipeline")
    steps = {version: delivery.observe()}
    delivery.traffic(challenger_error_scale, seed)
    delivery.unpack()
    delivery.run("rollout")
    steps["decided"] = delivery.observe()
    delivery.run("rollout")
    steps["again"] = delivery.observe()
    return steps


@pytest.fixture(scope="module")
def first_experiment(delivery: Delivery) -> dict[str, Observed]:
    """v1 champion, then v2 in the A/B test with traffic where v2 is worse."""
    delivery.run("pipeline")
    return {"v1": delivery.observe(), **experiment(delivery, "v2", challenger_error_scale=2.0, seed=11)}


def test_the_first_version_is_promoted_and_served_alone(delivery, first_experiment):
    model = delivery.names.model_name
    assert delivery.tags(1)[GATE_OUTCOME_TAG] == PROMOTED
    assert first_experiment["v1"].served == [(model, "1", 100)]


def test_an_as_good_version_becomes_an_experiment_served_in_the_sticky_ab_model(delivery, first_experiment):
    model = delivery.names.model_name
    assert delivery.tags(2)[GATE_OUTCOME_TAG] == EXPERIMENT
    assert first_experiment["v2"].aliases == {CHAMPION: 1, CHALLENGER: 2}
    [(entity, _, share)] = first_experiment["v2"].served
    assert (entity, share) == (ab_model_name(model), 100)


def test_each_key_met_the_variant_its_hash_assigns_and_about_the_share_met_the_challenger(
    delivery, first_experiment
):
    """The key is a model input, so the monitoring rows carry it; a customer asked in several
    requests always met one variant."""
    assert AB_KEY in regression_spec.PROBLEM.request_input_names
    rows = delivery.monitoring_rows()
    answered = rows[rows["variant"].notna()]
    assert len(answered) > 400
    expected = pd.Series(challenger_rows(answered[AB_KEY].astype("int64"), SHARE), index=answered.index)
    assert ((answered["variant"] == CHALLENGER) == expected).all()
    per_key = answered.groupby(AB_KEY)["variant"]
    assert (per_key.size() > 1).sum() > 50 and (per_key.nunique() == 1).all()
    assert abs((answered["variant"] == CHALLENGER).mean() - SHARE) < 0.1  # a few hundred keys


def test_a_worse_challenger_is_rolled_back_once_and_the_champion_served_alone(delivery, first_experiment):
    model = delivery.names.model_name
    tags = delivery.tags(2)
    assert tags[ROLLOUT_OUTCOME_TAG] == ROLLOUT_ROLLED_BACK, tags.get("rollout_reason")
    assert first_experiment["decided"].aliases == {CHAMPION: 1}
    assert first_experiment["decided"].served == [(model, "1", 100)]
    assert first_experiment["again"] == first_experiment["decided"]


def test_per_variant_metrics_were_recorded_with_intervals(delivery, first_experiment):
    metrics = delivery.platform.read_table(delivery.names.monitoring_tables.rollout_metrics).toPandas()
    assert {CHAMPION, CHALLENGER} <= set(metrics["variant"])
    decided = metrics[metrics["decision"] == "rollback"]
    latest = decided[decided["computed_at"] == decided["computed_at"].min()].set_index("variant")
    for variant in (CHAMPION, CHALLENGER):
        assert latest.loc[variant, "labelled"] >= 60
        assert (
            latest.loc[variant, "rmse_low"] <= latest.loc[variant, "rmse"] <= latest.loc[variant, "rmse_high"]
        )
    assert latest.loc[CHALLENGER, "rmse"] > latest.loc[CHAMPION, "rmse"]


@pytest.fixture(scope="module")
def second_experiment(delivery: Delivery, first_experiment) -> dict[str, Observed]:
    """v3 in the A/B test against v1 with traffic where v3 is better, then the rollout job with
    action=rollback."""
    steps = experiment(delivery, "v3", challenger_error_scale=0.5, seed=12)
    delivery.run("rollout", {"action": "rollback"})
    return {**steps, "rolled_back": delivery.observe()}


def test_a_better_challenger_is_promoted_once_and_served_alone(delivery, second_experiment):
    model = delivery.names.model_name
    assert delivery.tags(3)[GATE_OUTCOME_TAG] == EXPERIMENT
    assert second_experiment["v3"].aliases == {CHAMPION: 1, CHALLENGER: 3}
    tags = delivery.tags(3)
    assert tags[ROLLOUT_OUTCOME_TAG] == ROLLOUT_PROMOTED, tags.get("rollout_reason")
    assert second_experiment["decided"].aliases[CHAMPION] == 3
    assert second_experiment["decided"].served == [(model, "3", 100)]
    assert second_experiment["again"] == second_experiment["decided"]


def test_the_rollback_action_serves_the_previous_champion_again(delivery, second_experiment):
    assert second_experiment["rolled_back"].aliases[CHAMPION] == 1
    assert second_experiment["rolled_back"].served == [(delivery.names.model_name, "1", 100)]
