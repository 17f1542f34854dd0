"""The monitoring job and its quality monitor task in the bundle: schema, per-target switch, wiring."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from churn_example.spec import PROBLEM as CHURN
from mlops_laptop.bundle.loader import load_bundle, read_config
from mlops_laptop.bundle.runner import check_job, load_entry_point
from mlops_laptop.bundle.validate import SCHEMA_ENV, check_config, find_schema, load_schema
from mlops_template.tasks import (
    monitor_check,
    monitor_drift,
    monitor_unpack,
    quality_monitor,
    rollout_metrics,
)
from mlops_template.tasks.common import TaskArgumentError, build_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "mlops-monitor-unpack": monitor_unpack.MonitorUnpackConfig,
    "mlops-monitor-drift": monitor_drift.MonitorDriftConfig,
    "mlops-monitor-check": monitor_check.MonitorCheckConfig,
    "mlops-quality-monitor": quality_monitor.QualityMonitorConfig,
    "mlops-rollout-metrics": rollout_metrics.RolloutMetricsConfig,
}
RUNTIME_VALUES = {
    "job.run_id": "7",
    "job.parameters.granularity": "1 hour",
    "job.parameters.thresholds": "{}",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEMA_ENV, raising=False)


def test_the_whole_configuration_passes_the_cli_json_schema() -> None:
    check_config(read_config(PROJECT_ROOT), load_schema(find_schema()))


def _parameters(target: str, task_key: str = "quality_monitor") -> list[str]:
    job = load_bundle(PROJECT_ROOT, target).job("monitoring")
    [task] = [task for task in job["tasks"] if task["task_key"] == task_key]
    return task["python_wheel_task"]["parameters"]


def _quality_monitor_config(target: str) -> quality_monitor.QualityMonitorConfig:
    return build_config(quality_monitor.QualityMonitorConfig, _parameters(target))


def test_the_drift_task_gets_the_schema_and_the_champions_model_name() -> None:
    """The drift baseline is the prepared rows of the schema and the champion's predictions on them."""
    bundle = load_bundle(PROJECT_ROOT, "staging")
    config = build_config(
        monitor_drift.MonitorDriftConfig, [_runtime(p) for p in _parameters("staging", "drift")]
    )
    schema = f"{bundle.variables['catalog']}.{bundle.resources['schemas']['pipeline_schema']['name']}"
    assert config.schema_ == schema
    assert config.model_name == f"{schema}.{bundle.variables['model_name']}"


@pytest.mark.parametrize("target, enabled", [("dev", False), ("staging", True), ("prod", True)])
def test_the_quality_monitor_is_a_task_on_in_staging_and_prod_only(target: str, enabled: bool) -> None:
    """No `quality_monitors` resource: it needs the monitoring table at `bundle deploy`, which only
    the job's unpack task creates (a first deploy to an empty workspace would fail)."""
    bundle = load_bundle(PROJECT_ROOT, target)
    assert "quality_monitors" not in bundle.resources
    config = _quality_monitor_config(target)
    assert config.enabled is enabled
    schema = bundle.resources["schemas"]["pipeline_schema"]["name"]
    prefix = bundle.variables["inference_table_prefix"]
    spec = config.spec(CHURN)
    assert spec.table_name == f"{bundle.variables['catalog']}.{schema}.{prefix}_monitoring"
    assert spec.output_schema_name == f"{bundle.variables['catalog']}.{schema}"
    assert spec.inference_log.model_dump() == {
        "problem_type": "PROBLEM_TYPE_CLASSIFICATION",  # the problem spec's task type, no job parameter
        "timestamp_col": "request_time",
        "model_id_col": "model_version",
        "prediction_col": "predicted_label",
        "label_col": CHURN.label,
        "granularities": ["1 hour", "1 day"],
    }
    assert not [p for p in _parameters(target) if p.startswith("--problem-type")]
    assert spec.slicing_exprs == ["request_format", "variant"]
    assert bool(spec.schedule_cron) == (target == "prod")


def test_a_broken_monitor_setting_is_rejected_naming_its_parameter(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "databricks.yml", root)
    shutil.copytree(PROJECT_ROOT / "resources", root / "resources")
    job_file = root / "resources" / "monitoring.job.yml"
    job_file.write_text(job_file.read_text().replace("--granularities=1 hour,1 day", "--granularities="))
    tasks = load_bundle(root, "prod").job("monitoring")["tasks"]
    [task] = [t for t in tasks if t["task_key"] == "quality_monitor"]
    with pytest.raises(TaskArgumentError, match=r"--granularities"):
        build_config(quality_monitor.QualityMonitorConfig, task["python_wheel_task"]["parameters"])


def _runtime(value: str) -> str:
    return re.sub(r"\{\{\s*([^{}]*?)\s*\}\}", lambda match: RUNTIME_VALUES[match.group(1)], value)


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_the_monitoring_job_runs_locally_with_parameters_its_tasks_accept(target: str) -> None:
    job: dict[str, Any] = load_bundle(PROJECT_ROOT, target).job("monitoring")
    check_job("monitoring", job)
    tasks = {task["task_key"]: task for task in job["tasks"]}
    assert list(tasks) == [
        "unpack",
        "quality_monitor",
        "rollout_metrics",
        "drift",
        "check",
        "retrain_gate",
        "retrain",
    ]
    assert tasks["quality_monitor"]["depends_on"] == [{"task_key": "unpack"}]
    assert tasks["rollout_metrics"]["depends_on"] == [{"task_key": "unpack"}]
    for task in tasks.values():
        if "python_wheel_task" in task:
            spec = task["python_wheel_task"]
            assert load_entry_point(spec["package_name"], spec["entry_point"])
            build_config(CONFIGS[spec["entry_point"]], [_runtime(p) for p in spec["parameters"]])
    assert tasks["retrain_gate"]["condition_task"]["left"] == "{{tasks.check.values.retrain}}"
    assert tasks["retrain"]["depends_on"] == [{"task_key": "retrain_gate", "outcome": "true"}]
    assert job["schedule"]["pause_status"] == ("UNPAUSED" if target == "prod" else "PAUSED")
    raw = yaml.safe_load((PROJECT_ROOT / "resources" / "monitoring.job.yml").read_text())
    assert raw["resources"]["jobs"]["monitoring"]["tasks"][-1]["run_job_task"] == {
        "job_id": "${resources.jobs.pipeline.id}"
    }
