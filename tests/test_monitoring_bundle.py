"""The monitoring job and the quality monitor in the bundle: schema, per-target switch, task wiring."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_template.bundle.loader import BundleError, load_bundle, read_config
from mlops_template.bundle.runner import check_job, load_entry_point
from mlops_template.bundle.validate import (
    SCHEMA_ENV,
    check_against_schema,
    check_config,
    load_schema,
    validate_bundle,
)
from mlops_template.tasks import monitor_check, monitor_drift, monitor_unpack
from mlops_template.tasks.common import build_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = (PROJECT_ROOT / ".." / "shared" / "reference" / "bundle-jsonschema.json").resolve()
CONFIGS = {
    "mlops-monitor-unpack": monitor_unpack.MonitorUnpackConfig,
    "mlops-monitor-drift": monitor_drift.MonitorDriftConfig,
    "mlops-monitor-check": monitor_check.MonitorCheckConfig,
}
RUNTIME_VALUES = {
    "job.run_id": "7",
    "job.parameters.granularity": "1 hour",
    "job.parameters.thresholds": "{}",
}

needs_schema = pytest.mark.skipif(not SCHEMA.is_file(), reason=f"{SCHEMA} is absent")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEMA_ENV, raising=False)


@needs_schema
def test_the_whole_configuration_passes_the_cli_json_schema() -> None:
    check_config(read_config(PROJECT_ROOT), load_schema(SCHEMA))


@needs_schema
@pytest.mark.parametrize("target, deployed", [("dev", False), ("staging", True), ("prod", True)])
def test_the_quality_monitor_exists_in_staging_and_prod_only(target: str, deployed: bool) -> None:
    bundle = load_bundle(PROJECT_ROOT, target)
    monitors = bundle.resources.get("quality_monitors", {})
    assert bool(monitors) == deployed
    if not deployed:
        return
    monitor = monitors["fare_monitor"]
    check_against_schema(load_schema(SCHEMA), {"resources": {"quality_monitors": monitors}}, lambda _p: None)
    schema = bundle.resources["schemas"]["pipeline_schema"]["name"]
    prefix = bundle.variables["inference_table_prefix"]
    assert monitor["table_name"] == f"{target}.{schema}.{prefix}_monitoring"
    assert monitor["output_schema_name"] == f"{target}.{schema}"
    assert monitor["inference_log"] | {"granularities": None} == {
        "problem_type": "PROBLEM_TYPE_REGRESSION",
        "timestamp_col": "request_time",
        "model_id_col": "served_entity_id",
        "prediction_col": "prediction",
        "label_col": "fare_amount",
        "granularities": None,
    }
    assert ("schedule" in monitor) == (target == "prod")


@needs_schema
def test_a_broken_monitor_is_rejected_naming_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "databricks.yml", root)
    shutil.copytree(PROJECT_ROOT / "resources", root / "resources")
    (root / "resources" / "monitoring.job.yml").unlink()  # checked on its own below
    monkeypatch.setenv(SCHEMA_ENV, str(SCHEMA))
    assert validate_bundle(root, "prod").resources["quality_monitors"]
    monitor_file = root / "resources" / "quality_monitor.yml"
    monitor_file.write_text(monitor_file.read_text().replace("PROBLEM_TYPE_REGRESSION", "REGRESSION"))
    with pytest.raises(BundleError, match=r"quality_monitors\.fare_monitor\.inference_log\.problem_type"):
        validate_bundle(root, "staging")


def _runtime(value: str) -> str:
    return re.sub(r"\{\{\s*([^{}]*?)\s*\}\}", lambda match: RUNTIME_VALUES[match.group(1)], value)


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_the_monitoring_job_runs_locally_with_parameters_its_tasks_accept(target: str) -> None:
    job: dict[str, Any] = load_bundle(PROJECT_ROOT, target).job("monitoring")
    check_job("monitoring", job)
    tasks = {task["task_key"]: task for task in job["tasks"]}
    assert list(tasks) == ["unpack", "drift", "check", "retrain_gate", "retrain"]
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
