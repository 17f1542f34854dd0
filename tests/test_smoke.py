"""The smoke job: one cheap task per platform interface, run by deploy-staging before the pipeline
and by `mlops run smoke -t dev` here, on the laptop platform.

Databricks behaviour it relies on:
- only Python notebooks set task values, which a condition task reads as `{{tasks.K.values.V}}`
  and compares as strings with EQUAL_TO (docs.databricks.com/jobs/task-values,
  docs.databricks.com/workflows/jobs/conditional-tasks.html);
- a task on the branch not taken is Excluded, "skipped and treated as successful", and a run fails
  only when a leaf task fails (conditional-tasks.html, "How does Databricks Jobs determine job run
  status?"): so the false branch has a task that fails, and every check feeds the leaf `cleanup`;
- a time-series feature lookup takes the latest value at or before the lookup time, null when
  there is none (docs.databricks.com/machine-learning/feature-store/time-series.html);
- UC model names have three levels (MLflow `_unity_catalog_utils`, enforced locally by
  `UnityCatalogLocalStore`, see test_uc_registry.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.bundle.runner import JobRunResult, LocalJobRunner, TaskStatus, check_job, load_entry_point
from mlops_laptop.platform.local import LocalPlatform

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "deploy-staging.yml"
CHECKS = ("table", "feature_table", "model", "score", "endpoint_spec", "set_value", "value_gate", "cleanup")


def _errors(result: JobRunResult) -> dict[str, str]:
    return {t.task_key: t.error or "" for t in result.tasks if t.error}


def _task(job: dict[str, Any], task_key: str) -> dict[str, Any]:
    return next(t for t in job["tasks"] if t["task_key"] == task_key)


def _names(job: dict[str, Any]) -> set[str]:
    """Every table or model name the job's wheel tasks are given."""
    return {
        parameter.split("=", 1)[1]
        for task in job["tasks"]
        for parameter in task.get("python_wheel_task", {}).get("parameters", [])
        if parameter.split("=", 1)[0] in ("--table", "--feature-table", "--model-name")
    }


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_the_smoke_job_is_defined_for_every_target_on_scratch_names(target: str) -> None:
    bundle = load_bundle(PROJECT_ROOT, target)
    job = bundle.job("smoke")
    check_job("smoke", job)
    assert job["max_concurrent_runs"] == 1 and "schedule" not in job and "trigger" not in job
    for task in job["tasks"]:
        if spec := task.get("python_wheel_task"):
            assert load_entry_point(spec["package_name"], spec["entry_point"])
    schema = bundle.resources["schemas"]["pipeline_schema"]
    prefix = f"{schema['catalog_name']}.{schema['name']}.smoke_"
    assert _names(job) and all(name.startswith(prefix) for name in _names(job))
    assert _task(job, "value_gate")["condition_task"] == {
        "op": "EQUAL_TO",
        "left": "{{tasks.set_value.values.smoke_value}}",
        "right": "ok",
    }


def test_deploy_staging_runs_the_smoke_job_after_deploying_and_before_the_pipeline() -> None:
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["deploy"]["steps"]
    commands = [step["run"].split("--var")[0].strip() for step in steps if "run" in step]
    deploy = commands.index("databricks bundle deploy -t staging")
    smoke = commands.index("databricks bundle run smoke -t staging")
    assert deploy < smoke < commands.index("databricks bundle run pipeline -t staging")


def _runner(platform: LocalPlatform, job: dict[str, Any]) -> LocalJobRunner:
    bundle = load_bundle(PROJECT_ROOT, "dev")
    job_file = PROJECT_ROOT / bundle.sources["resources.jobs.smoke"]
    return LocalJobRunner(
        {"smoke": job}, platform.task_values, platform.state_dir / "runs", job_files={"smoke": job_file}
    )


def test_mlops_run_smoke_passes_on_the_laptop_and_cleans_up(platform: LocalPlatform) -> None:
    """`mlops run smoke -t dev`: the dev bundle's job, every check green, its scratch names gone."""
    bundle = load_bundle(PROJECT_ROOT, "dev")
    runner = LocalJobRunner.for_bundle(bundle, platform.task_values, platform.state_dir / "runs")
    result = runner.run("smoke")
    assert result.succeeded, _errors(result)
    assert {t.task_key: t.status for t in result.tasks} == {
        **dict.fromkeys(CHECKS, TaskStatus.SUCCESS),
        "value_missing": TaskStatus.EXCLUDED,
    }
    assert result.task("value_gate").outcome == "true"
    job = bundle.job("smoke")
    cleanup = _task(job, "cleanup")["python_wheel_task"]["parameters"]
    table, feature_table, model = (p.split("=", 1)[1] for p in cleanup)
    assert not platform.table_exists(table) and not platform.table_exists(feature_table)
    platform.configure_mlflow()
    with pytest.raises(MlflowException, match="not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        MlflowClient().get_registered_model(model)


def _set_parameter(job: dict[str, Any], task_key: str, name: str, value: str) -> None:
    spec = _task(job, task_key)["python_wheel_task"]
    spec["parameters"] = [
        f"--{name}={value}" if parameter.startswith(f"--{name}=") else parameter
        for parameter in spec["parameters"]
    ]


def test_a_broken_interface_fails_its_own_task_saying_what_to_check(platform: LocalPlatform) -> None:
    """Real failures, no mocks: a two-level table name, a two-level model name (UC refuses both)
    and a condition the task value does not meet."""
    job = copy.deepcopy(load_bundle(PROJECT_ROOT, "dev").job("smoke"))
    _set_parameter(job, "table", "table", "smoke_table")
    _set_parameter(job, "model", "model-name", "workspace.smoke_model")
    _task(job, "value_gate")["condition_task"]["right"] = "not ok"

    result = _runner(platform, job).run("smoke")

    errors = _errors(result)
    assert not result.succeeded
    assert "'write and merge a table (platform.save_table / merge_table)' failed" in errors["table"]
    assert "three-level" in errors["table"] and "CREATE TABLE" in errors["table"]
    assert "'register a model version and set an alias (MLflow registry)' failed" in errors["model"]
    assert "three levels" in errors["model"] or "three-level" in errors["model"], errors["model"]
    assert "condition value_gate read smoke_value='ok' and was not met" in errors["value_missing"]
    assert result.task("feature_table").status == TaskStatus.SUCCESS
    assert result.task("score").status == TaskStatus.UPSTREAM_FAILED
    assert result.task("cleanup").status != TaskStatus.SUCCESS
