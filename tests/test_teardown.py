"""The teardown job: deletes what tasks created outside the bundle's resources (which
`databricks bundle destroy` therefore leaves): the endpoint, the quality monitor, the A/B model.

Sources: `bundle destroy` deletes only the bundle's resources (schemas with force_destroy:
databricks/cli bundle/deploy/terraform/tfdyn/convert_schema.go); `serving_endpoints.delete` and
`quality_monitors.delete` (databricks/sdk/service/serving.py, catalog.py) are tested against their
fakes in test_serving_databricks.py and test_quality_monitor.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.bundle.runner import LocalJobRunner, TaskStatus, check_job, load_entry_point
from mlops_laptop.serving.local_deploy import deployed_endpoint
from mlops_template.monitoring.quality_monitor import InferenceLogSpec, QualityMonitorSpec, quality_monitors
from mlops_template.serving.deploy import endpoint_deployer
from mlops_template.serving.spec import InferenceTableSpec, ab_model_name, endpoint_config
from mlops_template.tasks.common import build_config
from mlops_template.tasks.teardown import TeardownConfig
from test_serving_support import register_regression_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _parameters(target: str, job: str, task_key: str) -> dict[str, str]:
    [task] = [t for t in load_bundle(PROJECT_ROOT, target).job(job)["tasks"] if t["task_key"] == task_key]
    return dict(p.removeprefix("--").split("=", 1) for p in task["python_wheel_task"]["parameters"])


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_the_teardown_job_names_what_the_pipeline_and_monitoring_jobs_create(target: str) -> None:
    job = load_bundle(PROJECT_ROOT, target).job("teardown")
    check_job("teardown", job)
    [task] = job["tasks"]
    spec = task["python_wheel_task"]
    assert load_entry_point(spec["package_name"], spec["entry_point"])
    config = build_config(TeardownConfig, spec["parameters"])
    deploy = _parameters(target, "pipeline", "deploy")
    monitor = _parameters(target, "monitoring", "quality_monitor")
    assert (config.endpoint_name, config.model_name) == (deploy["endpoint-name"], deploy["model-name"])
    assert config.monitoring_table == monitor["monitoring-table"]


def test_teardown_removes_the_endpoint_monitor_and_ab_model_and_runs_again(platform, spark, tmp_path):
    """`mlops run teardown -t dev`: the deployed endpoint (deleted through the local control plane)
    and monitor and the A/B model are gone."""
    bundle = load_bundle(PROJECT_ROOT, "dev")
    job = bundle.job("teardown")
    config = build_config(TeardownConfig, job["tasks"][0]["python_wheel_task"]["parameters"])
    catalog, schema, _ = config.model_name.split(".")
    platform.configure_mlflow()
    version = register_regression_model(platform, config.model_name, slope=2.0)
    endpoint_deployer(platform).deploy(
        endpoint_config(
            endpoint_name=config.endpoint_name,
            model_name=config.model_name,
            champion_version=version,
            challenger_version=None,
            challenger_traffic_percent=0,
            workload_size="Small",
            scale_to_zero=True,
            inference_table=InferenceTableSpec(
                enabled=False, catalog_name=catalog, schema_name=schema, table_name_prefix="served"
            ),
            git_sha="abc",
        ),
    )
    rows = spark.createDataFrame(
        [(dt.datetime(2024, 5, 1), "1", 10.0, 11.0)],
        "request_time timestamp, model_version string, prediction double, label double",
    )
    platform.save_table(rows, config.monitoring_table)
    monitors = quality_monitors(platform)
    monitors.apply(
        QualityMonitorSpec(
            table_name=config.monitoring_table,
            output_schema_name=f"{catalog}.{schema}",
            assets_dir="/Workspace/monitoring",
            inference_log=InferenceLogSpec(
                problem_type="PROBLEM_TYPE_REGRESSION",
                timestamp_col="request_time",
                model_id_col="model_version",
                prediction_col="prediction",
                label_col="label",
                granularities=["1 day"],
            ),
        )
    )
    register_regression_model(platform, ab_model_name(config.model_name), slope=2.0)

    runner = LocalJobRunner({"teardown": job}, platform.task_values, tmp_path / "runs")
    for _ in range(2):  # the second run finds nothing and succeeds
        result = runner.run("teardown", {})
        assert [(r.task_key, r.status) for r in result.tasks] == [("teardown", TaskStatus.SUCCESS)]

    assert deployed_endpoint(platform, config.endpoint_name) is None
    assert monitors.recorded(config.monitoring_table) is None
    platform.configure_mlflow()
    with pytest.raises(MlflowException):
        MlflowClient().get_registered_model(ab_model_name(config.model_name))
    assert platform.table_exists(config.monitoring_table)  # tables go with `bundle destroy`
