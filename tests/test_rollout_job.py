"""The rollout job and the monitoring job's rollout_metrics task, from the bundle's own definitions,
run by the local runner on the session's platform: a live experiment of two tiny registered models
(neutral inputs, tests/test_serving_support.py), its monitoring rows, the decision applied to the
registry, recorded in the rollout metrics table and an MLflow run, and idempotent when run twice.

The `deploy` task after `decide` is the pipeline's (tests of the deploy task cover it); here the
job's definition is checked to give it the pipeline's parameters. Job parameters reach a wheel task
through `{{job.parameters.NAME}}` references
(https://docs.databricks.com/aws/en/jobs/dynamic-value-references).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from rich.console import Console

import regression_spec
from mlops_laptop.bundle.loader import ResolvedBundle, load_bundle
from mlops_laptop.bundle.runner import JobRunResult, LocalJobRunner, check_job, load_entry_point
from mlops_laptop.pipeline_names import pipeline_names
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.rollout.report import latest_rows, rollout_report
from mlops_laptop.serving.local_deploy import deployed_endpoint
from mlops_laptop.serving.local_host import local_host
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.registry.experiment import (
    EXPERIMENT,
    ROLLOUT_OUTCOME_TAG,
    ROLLOUT_REASON_TAG,
    Experiment,
    ExperimentChangedError,
    conclude_promote,
    conclude_rollback,
    mark_started,
    running_experiment,
)
from mlops_template.registry.versions import (
    CHALLENGER,
    CHAMPION,
    GATE_OUTCOME_TAG,
    PREVIOUS_CHAMPION,
    ROLLED_BACK,
    get_aliases,
    promote,
    set_version_tags,
)
from mlops_template.serving.deploy import DatabricksEndpointDeployer
from mlops_template.tasks.common import build_config
from mlops_template.tasks.deploy import DeployConfig
from mlops_template.tasks.rollout_decide import RolloutDecideConfig
from mlops_template.tasks.rollout_metrics import RolloutMetricsConfig
from test_rollout_analysis import T0, record_entities, traffic, write_monitoring
from test_serving_support import logged_endpoint, register_regression_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ROLLOUT_PARAMS = {"min_labelled": 100, "min_duration_hours": 1, "bootstrap_resamples": 500}
CONFIGS = {
    "mlops-rollout-decide": RolloutDecideConfig,
    "mlops-rollout-metrics": RolloutMetricsConfig,
    "mlops-deploy": DeployConfig,
}
RUNTIME = {"job.run_id": "7", "job.parameters.action": "auto"}


@pytest.fixture(autouse=True)
def _regression_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitoring rows' label is the regression spec's."""
    monkeypatch.setenv(PROBLEM_VARIABLE, regression_spec.REFERENCE)


@dataclass
class Setup:
    """A target's names for one test (its own model and tables) and its experiment."""

    bundle: ResolvedBundle
    model: str
    monitoring_table: str
    metrics_table: str

    def run(
        self, platform: LocalPlatform, tmp_path: Path, job: str, task: str, **parameters: str
    ) -> JobRunResult:
        """Run `task` of `job` as the bundle defines it, alone, with job `parameters`."""
        definition = self.bundle.job(job)
        [chosen] = [t for t in definition["tasks"] if t["task_key"] == task]
        alone = {**definition, "tasks": [{k: v for k, v in chosen.items() if k != "depends_on"}]}
        runner = LocalJobRunner({job: alone}, platform.task_values, tmp_path / "runs")
        result = runner.run(job, parameters)
        assert result.succeeded, [t.error for t in result.tasks]
        return result


@pytest.fixture
def setup(platform: LocalPlatform) -> Setup:
    platform.configure_mlflow()
    suffix = uuid.uuid4().hex[:8]
    bundle = load_bundle(
        PROJECT_ROOT,
        "dev",
        {
            "model_name": f"rollout_{suffix}",
            "inference_table_prefix": f"rollout_{suffix}",
            "rollout_params": json.dumps(ROLLOUT_PARAMS),
        },
    )
    schema = f"{bundle.variables['catalog']}.{bundle.resources['schemas']['pipeline_schema']['name']}"
    prefix = f"{schema}.rollout_{suffix}"
    return Setup(bundle, f"{prefix}", f"{prefix}_monitoring", f"{prefix}_rollout_metrics")


def start_experiment(
    platform: LocalPlatform, setup: Setup, champion_sd: float, challenger_sd: float, **kw: Any
) -> None:
    """Champion v1 and challenger v2 (gate outcome `experiment`) served since T0, and their rows:
    predictions off by N(0, sd) of each."""
    register_regression_model(platform, setup.model, slope=2.0, aliases=(CHAMPION,))
    register_regression_model(platform, setup.model, slope=3.0, aliases=(CHALLENGER,))
    set_version_tags(setup.model, 2, {GATE_OUTCOME_TAG: EXPERIMENT})
    mark_started(Experiment(setup.model, 1, 2, None), when=T0)
    ids = {variant: f"{variant}-{uuid.uuid4().hex[:8]}" for variant in (CHAMPION, CHALLENGER)}
    record_entities(platform, {ids[CHAMPION]: (setup.model, 1), ids[CHALLENGER]: (setup.model, 2)})
    rows = [
        *traffic(ids[CHAMPION], 300, error_sd=champion_sd, seed=1),
        *traffic(ids[CHALLENGER], 300, error_sd=challenger_sd, seed=2, **kw),
    ]
    write_monitoring(platform, setup.monitoring_table, rows)


def _state(platform: LocalPlatform, setup: Setup) -> tuple[dict[str, int], dict[str, str], int]:
    """Aliases, the challenger's tags and the rollout metrics rows: what a decision changes."""
    tags = MlflowClient().get_model_version(setup.model, "2").tags
    rows = (
        platform.read_table(setup.metrics_table).count() if platform.table_exists(setup.metrics_table) else 0
    )
    return get_aliases(setup.model), tags, rows


def _mlflow_run(reason: str) -> Any:
    run_id = re.search(r"MLflow run (\w+)", reason).group(1)
    return MlflowClient().get_run(run_id)


def test_a_better_challenger_is_promoted_once(platform, setup, tmp_path):
    start_experiment(platform, setup, champion_sd=2.0, challenger_sd=1.0)

    setup.run(platform, tmp_path, "rollout", "decide", action="auto")

    aliases, tags, rows = _state(platform, setup)
    assert aliases == {CHAMPION: 2, CHALLENGER: 2, PREVIOUS_CHAMPION: 1}
    assert running_experiment(setup.model) is None
    assert tags[ROLLOUT_OUTCOME_TAG] == "promoted"
    assert tags[ROLLOUT_REASON_TAG].startswith("better: challenger version 2 minus champion version 1 rmse -")
    run = _mlflow_run(tags[ROLLOUT_REASON_TAG])
    assert run.data.tags["rollout_decision"] == "promote" and run.data.tags["rollout_applied"] == "true"
    assert run.data.metrics["challenger_rmse_difference_high"] < 0
    assert run.data.params["min_labelled"] == "100"
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "rollout")}
    assert artifacts == {"rollout/variants.png", "rollout/decision.txt"}
    stored = latest_rows(platform, setup.metrics_table, produced_by="the rollout job")
    assert [(r["variant"], r["version"], r["decision"], r["applied"]) for r in stored] == [
        ("champion", 1, "promote", True),
        ("challenger", 2, "promote", True),
    ]
    assert rows == 2

    setup.run(platform, tmp_path, "rollout", "decide", action="auto")

    assert _state(platform, setup) == (aliases, tags, rows)


def test_a_worse_challenger_is_rolled_back_once(platform, setup, tmp_path):
    start_experiment(platform, setup, champion_sd=1.0, challenger_sd=2.0)

    setup.run(platform, tmp_path, "rollout", "decide", action="auto")

    aliases, tags, rows = _state(platform, setup)
    assert aliases == {CHAMPION: 1}
    assert tags[ROLLOUT_OUTCOME_TAG] == "rolled_back"
    assert tags[ROLLOUT_REASON_TAG].startswith("worse: challenger version 2 minus champion version 1 rmse +")

    setup.run(platform, tmp_path, "rollout", "decide", action="auto")

    assert _state(platform, setup) == (aliases, tags, rows)


def test_a_failing_challenger_is_rolled_back_for_its_error_rate(platform, setup, tmp_path):
    start_experiment(platform, setup, champion_sd=2.0, challenger_sd=1.0, failed_every=10)

    setup.run(platform, tmp_path, "rollout", "decide", action="auto")

    aliases, tags, _ = _state(platform, setup)
    assert aliases == {CHAMPION: 1}
    assert "challenger version 2 failed 10.0% of 300 requests (limit 5.0%)" in tags[ROLLOUT_REASON_TAG]


def test_too_few_labels_keep_collecting_and_change_nothing(platform, setup, tmp_path):
    start_experiment(platform, setup, champion_sd=2.0, challenger_sd=1.0, labelled_share=0.2)
    before = get_aliases(setup.model)

    setup.run(platform, tmp_path, "rollout", "decide", action="auto")

    aliases, tags, _ = _state(platform, setup)
    assert aliases == before and ROLLOUT_OUTCOME_TAG not in tags
    [stored] = [r for r in latest_rows(platform, setup.metrics_table, "") if r["variant"] == "challenger"]
    assert (stored["decision"], stored["applied"]) == ("continue", False)
    assert stored["reason"] == "collecting: 60 of 100 labelled challenger predictions"


def test_the_monitoring_task_records_the_analysis_and_decides_nothing(platform, setup, tmp_path):
    start_experiment(platform, setup, champion_sd=2.0, challenger_sd=1.0)
    before = get_aliases(setup.model)

    setup.run(platform, tmp_path, "monitoring", "rollout_metrics")

    assert get_aliases(setup.model) == before
    assert running_experiment(setup.model) is not None
    stored = latest_rows(platform, setup.metrics_table, "")
    assert {(r["variant"], r["decision"], r["applied"]) for r in stored} == {
        ("champion", "promote", False),
        ("challenger", "promote", False),
    }
    console = Console(width=200, record=True)
    console.print(rollout_report(stored, running_experiment(setup.model)))
    text = console.export_text()
    assert "challenger v2 vs champion v1" in text
    assert "decision: promote (not applied): better:" in text
    assert "Running: challenger v2 beside champion v1, since 2024-06-01 08:00 UTC." in text


def test_action_rollback_moves_the_champion_back(platform, setup, tmp_path):
    register_regression_model(platform, setup.model, slope=2.0)
    register_regression_model(platform, setup.model, slope=3.0)
    promote(setup.model, 1)
    promote(setup.model, 2)

    setup.run(platform, tmp_path, "rollout", "decide", action="rollback")

    assert get_aliases(setup.model) == {CHAMPION: 1, ROLLED_BACK: 2}


def test_a_decision_on_versions_whose_aliases_moved_meanwhile_changes_nothing(platform, setup):
    """The rollout job and a pipeline run can overlap: a training that took `challenger` after the
    experiment was read starts a new experiment, which the old decision must not end."""
    start_experiment(platform, setup, champion_sd=1.0, challenger_sd=2.0)
    judged = running_experiment(setup.model)
    assert judged is not None
    newer = register_regression_model(platform, setup.model, slope=4.0, aliases=(CHALLENGER,))
    for conclude in (conclude_rollback, conclude_promote):
        with pytest.raises(ExperimentChangedError, match=f"challenger {newer}: nothing changed"):
            conclude(judged, "worse")
    assert get_aliases(setup.model) == {CHAMPION: 1, CHALLENGER: int(newer)}
    assert ROLLOUT_OUTCOME_TAG not in MlflowClient().get_model_version(setup.model, "2").tags


def test_rolling_the_champion_back_ends_a_running_experiment_first(platform, setup, tmp_path):
    """The experiment compared its challenger with the champion going away: it ends rolled back."""
    for slope in (1.0, 2.0):
        promote(setup.model, int(register_regression_model(platform, setup.model, slope=slope)))
    register_regression_model(platform, setup.model, slope=3.0, aliases=(CHALLENGER,))
    set_version_tags(setup.model, 3, {GATE_OUTCOME_TAG: EXPERIMENT})
    assert running_experiment(setup.model) == Experiment(setup.model, 2, 3, None)

    setup.run(platform, tmp_path, "rollout", "decide", action="rollback")

    assert get_aliases(setup.model) == {CHAMPION: 1, ROLLED_BACK: 2}
    tags = MlflowClient().get_model_version(setup.model, "3").tags
    assert tags[ROLLOUT_OUTCOME_TAG] == "rolled_back"
    assert tags[ROLLOUT_REASON_TAG] == "the champion, version 2, was rolled back by hand"


def test_without_an_experiment_the_job_changes_nothing(platform, setup, tmp_path):
    register_regression_model(platform, setup.model, slope=2.0, aliases=(CHAMPION, CHALLENGER))

    setup.run(platform, tmp_path, "rollout", "decide", action="auto")

    assert get_aliases(setup.model) == {CHAMPION: 1, CHALLENGER: 1}
    assert not platform.table_exists(setup.metrics_table)


# ----------------------------------------------------------------------------------------------
# The job definitions


def _runtime(value: str) -> str:
    return re.sub(r"\{\{\s*([^{}]*?)\s*\}\}", lambda match: RUNTIME[match.group(1)], value)


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_the_rollout_job_decides_then_deploys_as_the_pipeline_does(target: str) -> None:
    bundle = load_bundle(PROJECT_ROOT, target)
    job = bundle.job("rollout")
    check_job("rollout", job)
    tasks = {task["task_key"]: task for task in job["tasks"]}
    assert list(tasks) == ["decide", "deploy"]
    assert tasks["deploy"]["depends_on"] == [{"task_key": "decide"}]
    [pipeline_deploy] = [t for t in bundle.job("pipeline")["tasks"] if t["task_key"] == "deploy"]
    assert tasks["deploy"]["python_wheel_task"] == pipeline_deploy["python_wheel_task"]
    for task in tasks.values():
        wheel = task["python_wheel_task"]
        assert load_entry_point(wheel["package_name"], wheel["entry_point"])
        build_config(CONFIGS[wheel["entry_point"]], [_runtime(p) for p in wheel["parameters"]])
    assert job["parameters"] == [{"name": "action", "default": "auto"}]
    assert job["schedule"]["pause_status"] == ("UNPAUSED" if target == "prod" else "PAUSED")
    assert (job["max_concurrent_runs"], job["queue"]) == (1, {"enabled": True})


def test_decide_and_rollout_metrics_read_the_same_tables_and_params() -> None:
    bundle = load_bundle(PROJECT_ROOT, "staging")
    [decide] = bundle.job("rollout")["tasks"][:1]
    [metrics] = [t for t in bundle.job("monitoring")["tasks"] if t["task_key"] == "rollout_metrics"]
    decided = build_config(
        RolloutDecideConfig, [_runtime(p) for p in decide["python_wheel_task"]["parameters"]]
    )
    measured = build_config(
        RolloutMetricsConfig, [_runtime(p) for p in metrics["python_wheel_task"]["parameters"]]
    )
    assert decided.model_dump(exclude={"action"}) == measured.model_dump()
    assert decided.rollout_metrics_table.endswith(
        f"{bundle.variables['inference_table_prefix']}_rollout_metrics"
    )
    assert metrics["depends_on"] == [{"task_key": "unpack"}]


# ----------------------------------------------------------------------------------------------
# `mlops model rollback`: the rollout job with action=rollback, in a fresh target state


def _mlops(home: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MLOPS_HOME": str(home), "COLUMNS": "200"}
    mlops = Path(sys.executable).parent / "mlops"
    return subprocess.run(
        [str(mlops), *arguments], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True
    )


def test_mlops_model_rollback_redeploys_the_previous_champion(platform, tmp_path):
    """As `databricks bundle run rollout --params action=rollback`: the registry, then the endpoint."""
    bundle = load_bundle(PROJECT_ROOT, "dev")
    names = pipeline_names(bundle)
    target = LocalPlatform(bundle.target, tmp_path)
    try:
        target.configure_mlflow()
        for slope in (2.0, 3.0):
            register_regression_model(target, names.model_name, slope=slope)
        promote(names.model_name, 1)
        promote(names.model_name, 2)

        with local_host(target.state_dir) as host:  # the endpoint serving v2, deployed by the SDK
            deployer = DatabricksEndpointDeployer(host.workspace_client())
            deployer.deploy(logged_endpoint(names.endpoint, names.model_name, "2"))
        assert _served_versions(target, names.endpoint) == ["2"]

        rolled = _mlops(tmp_path, "model", "rollback", "-t", bundle.target)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert "champion is version 1 again" in rolled.stdout
        assert get_aliases(names.model_name) == {CHAMPION: 1, ROLLED_BACK: 2}
        assert _served_versions(target, names.endpoint) == ["1"]
    finally:
        platform.configure_mlflow()


def _served_versions(target: LocalPlatform, endpoint: str) -> list[str]:
    served = deployed_endpoint(target, endpoint)
    assert served is not None and served.config is not None
    return [entity.entity_version for entity in served.config.served_entities]
