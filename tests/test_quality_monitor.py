"""The quality monitor: created by a task of the monitoring job once `unpack` made its table.

Databricks: `WorkspaceClient().quality_monitors` against a loopback fake of the REST calls it makes
(POST/GET/PUT/DELETE /api/2.1/unity-catalog/tables/{table}/monitor, databricks/sdk/service/catalog.py),
bodies parsed with the SDK's dataclasses. Locally: the same request checked as Databricks checks it
(https://docs.databricks.com/lakehouse-monitoring/create-monitor-api.html: a Unity Catalog table,
its named columns, TIMESTAMP time column, the listed granularities) and recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.catalog import (
    MonitorCronSchedule,
    MonitorInferenceLog,
    MonitorInferenceLogProblemType,
    MonitorInfo,
)
from pydantic import ValidationError

from churn_example.spec import PROBLEM as CHURN
from loopback import authenticate_to, loopback_workspace, without_query
from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.bundle.runner import LocalJobRunner, TaskStatus
from mlops_laptop.monitoring.quality_monitor import LocalQualityMonitors
from mlops_laptop.serving.inference_table import PAYLOAD_DDL, InferenceRecord
from mlops_template.monitoring.quality_monitor import (
    DatabricksQualityMonitors,
    InferenceLogSpec,
    QualityMonitorError,
    QualityMonitorSpec,
    quality_monitors,
)
from mlops_template.platform import DatabricksPlatform, MissingTableError
from mlops_template.serving.served_entities import SERVED_ENTITIES_DDL, SERVED_ENTITIES_TABLE
from mlops_template.tasks.common import build_config
from mlops_template.tasks.quality_monitor import QualityMonitorConfig, run
from regression_spec import PROBLEM as BILL
from regression_spec import REFERENCE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_MONITOR_PATH = re.compile(r"^/api/2\.1/unity-catalog/tables/(?P<table>[^/]+)/monitor$")


def _spec(table: str, **overrides: Any) -> QualityMonitorSpec:
    settings: dict[str, Any] = {
        "table_name": table,
        "output_schema_name": ".".join(table.split(".")[:2]),
        "assets_dir": "/Workspace/Users/sp/.bundle/monitoring/served",
        "inference_log": InferenceLogSpec(
            problem_type="PROBLEM_TYPE_REGRESSION",
            timestamp_col="request_time",
            model_id_col="model_version",
            prediction_col="prediction",
            label_col="label",
            granularities=["1 hour", "1 day"],
        ),
        "slicing_exprs": ["request_format"],
    }
    return QualityMonitorSpec(**(settings | overrides))


class FakeMonitors:
    """Monitors in memory; creating one on a table not in `tables` fails as Unity Catalog does."""

    def __init__(self, tables: set[str]) -> None:
        self.tables = tables
        self.monitors: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((method, path, body))
        match = _MONITOR_PATH.match(path)
        if match is None:
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no fake for {method} {path}"}
        table = match["table"]
        if table not in self.tables:
            return 404, {"error_code": "TABLE_DOES_NOT_EXIST", "message": f"Table '{table}' does not exist."}
        current = self.monitors.get(table)
        if method == "POST":
            self.monitors[table] = body | {
                "table_name": table,
                "status": "MONITOR_STATUS_PENDING",
                "monitor_version": 1,
                "profile_metrics_table_name": f"{table}_profile_metrics",
                "drift_metrics_table_name": f"{table}_drift_metrics",
            }
            return 200, self.monitors[table]
        if current is None:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"no monitor on {table}"}
        if method == "GET":
            return 200, current
        if method == "PUT":
            current.update(body)
            current["monitor_version"] += 1
            return 200, current
        del self.monitors[table]
        return 200, {}


@pytest.fixture
def fake_monitors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[FakeMonitors, str]]:
    fake = FakeMonitors({"prod.ml.served_monitoring"})
    with loopback_workspace(without_query(fake.handle)) as host:
        authenticate_to(monkeypatch, host, tmp_path)
        yield fake, host


def _databricks(host: str) -> DatabricksQualityMonitors:
    return DatabricksQualityMonitors(WorkspaceClient(host=host, token="dapi-test-token"))


def test_databricks_creates_the_monitor_once_and_updates_it_only_when_it_differs(fake_monitors):
    fake, host = fake_monitors
    monitors = _databricks(host)
    table = "prod.ml.served_monitoring"
    assert monitors.apply(_spec(table)) == "created"
    [create] = [body for method, _, body in fake.calls if method == "POST"]
    assert MonitorInferenceLog.from_dict(create["inference_log"]) == MonitorInferenceLog(
        problem_type=MonitorInferenceLogProblemType.PROBLEM_TYPE_REGRESSION,
        timestamp_col="request_time",
        granularities=["1 hour", "1 day"],
        prediction_col="prediction",
        model_id_col="model_version",
        label_col="label",
    )
    assert (create["output_schema_name"], create["assets_dir"]) == (
        "prod.ml",
        "/Workspace/Users/sp/.bundle/monitoring/served",
    )
    assert "schedule" not in create

    assert monitors.apply(_spec(table)) == "unchanged"
    assert [m for m, path, _ in fake.calls if _MONITOR_PATH.match(path)] == ["GET", "POST", "GET"]

    hourly = _spec(table, schedule_cron="0 0 * * * ?")
    assert monitors.apply(hourly) == "updated"
    [update] = [body for m, _, body in fake.calls if m == "PUT"]
    assert MonitorCronSchedule.from_dict(update["schedule"]) == MonitorCronSchedule(
        quartz_cron_expression="0 0 * * * ?", timezone_id="UTC"
    )
    assert "assets_dir" not in update  # not updatable
    assert MonitorInfo.from_dict(fake.monitors[table]).monitor_version == 2

    assert monitors.delete(table)
    assert not monitors.delete(table)


def test_databricks_refuses_a_monitor_on_a_missing_table_saying_what_creates_it(fake_monitors):
    _, host = fake_monitors
    with pytest.raises(MissingTableError, match=r"prod.ml.absent.*unpack task creates it"):
        _databricks(host).apply(_spec("prod.ml.absent"))


def test_the_platform_picks_the_monitors(fake_monitors, platform):
    """The laptop platform's monitors are its package's entry point (the wheel never imports it)."""
    assert isinstance(quality_monitors(platform), LocalQualityMonitors)
    assert isinstance(quality_monitors(DatabricksPlatform()), DatabricksQualityMonitors)


def test_granularities_are_those_lakehouse_monitoring_accepts():
    with pytest.raises(ValidationError, match=r"unknown granularities \['2 hours'\]"):
        InferenceLogSpec(
            problem_type="PROBLEM_TYPE_REGRESSION",
            timestamp_col="t",
            model_id_col="m",
            prediction_col="p",
            granularities=["2 hours"],
        )
    with pytest.raises(ValidationError, match="catalog.schema"):
        _spec("prod.ml.t", output_schema_name="ml")


@pytest.fixture
def monitoring_table(platform, spark) -> str:
    table = f"test.quality_monitor.t_{uuid.uuid4().hex[:8]}"
    rows = spark.createDataFrame(
        [(dt.datetime(2024, 5, 1, 10), "3", 12.5, 13.0, "dataframe_records")],
        "request_time timestamp, model_version string, prediction double, label double, "
        "request_format string",
    )
    platform.save_table(rows, table)
    return table


def test_locally_the_monitor_is_checked_and_recorded_as_the_sdk_reads_it(platform, monitoring_table):
    monitors = quality_monitors(platform)
    assert monitors.apply(_spec(monitoring_table)) == "created"
    recorded = monitors.recorded(monitoring_table)
    info = MonitorInfo.from_dict(recorded | {"table_name": monitoring_table})
    assert info.inference_log.model_id_col == "model_version"
    assert info.output_schema_name == "test.quality_monitor"
    assert monitors.apply(_spec(monitoring_table)) == "unchanged"
    assert monitors.apply(_spec(monitoring_table, slicing_exprs=[])) == "updated"
    assert monitors.delete(monitoring_table)
    assert not monitors.delete(monitoring_table)
    assert monitors.recorded(monitoring_table) is None


def test_locally_what_databricks_refuses_is_refused(platform, spark, monitoring_table):
    monitors = quality_monitors(platform)
    with pytest.raises(MissingTableError, match=r"test.quality_monitor.absent.*unpack task creates it"):
        monitors.apply(_spec("test.quality_monitor.absent"))
    log = _spec(monitoring_table).inference_log
    unlabeled = log.model_copy(update={"label_col": "other_label"})
    with pytest.raises(QualityMonitorError, match=r"no column \['other_label'\]"):
        monitors.apply(_spec(monitoring_table, inference_log=unlabeled))
    with pytest.raises(QualityMonitorError, match="timestamp column prediction .* is double"):
        monitors.apply(
            _spec(monitoring_table, inference_log=log.model_copy(update={"timestamp_col": "prediction"}))
        )
    with pytest.raises(QualityMonitorError, match="output schema test.nowhere does not exist"):
        monitors.apply(_spec(monitoring_table, output_schema_name="test.nowhere"))
    assert monitors.recorded(monitoring_table) is None


def test_the_task_does_nothing_where_monitors_are_off(platform):
    arguments = [
        "--monitoring-table=test.quality_monitor.never_made",
        "--output-schema=test.quality_monitor",
        "--assets-dir=/Workspace/x",
    ]
    run(platform, build_config(QualityMonitorConfig, [*arguments, "--enabled=false"]))
    tables_off = [*arguments, "--enabled=true", "--inference-table-enabled=false"]
    run(platform, build_config(QualityMonitorConfig, tables_off))
    with pytest.raises(MissingTableError):
        run(platform, build_config(QualityMonitorConfig, [*arguments, "--enabled=true"]))


def test_the_monitors_problem_type_and_columns_follow_the_problem_spec(platform, spark, monkeypatch):
    """Regression monitors `prediction`; a binary classifier its `predicted_label` (at the spec's
    threshold) against the spec's label, as PROBLEM_TYPE_CLASSIFICATION: no job parameter says so."""
    arguments = ["--output-schema=test.quality_monitor", "--assets-dir=/Workspace/x", "--enabled=true"]
    table = f"test.quality_monitor.churn_{uuid.uuid4().hex[:8]}"
    config = build_config(QualityMonitorConfig, [f"--monitoring-table={table}", *arguments])
    regression = config.spec(BILL).inference_log
    assert (regression.problem_type, regression.prediction_col, regression.label_col) == (
        "PROBLEM_TYPE_REGRESSION",
        "prediction",
        "bill",
    )
    churn = config.spec(CHURN).inference_log
    assert (churn.problem_type, churn.prediction_col, churn.label_col) == (
        "PROBLEM_TYPE_CLASSIFICATION",
        "predicted_label",
        "churned",
    )
    rows = spark.createDataFrame(
        [(dt.datetime(2024, 5, 1, 10), "3", 0.7, 1.0, 1.0, "dataframe_records")],
        "request_time timestamp, model_version string, prediction double, predicted_label double, "
        "churned double, request_format string",
    )
    platform.save_table(rows, table)
    monkeypatch.setenv("MLOPS_PROBLEM", "churn_example.spec:PROBLEM")
    run(platform, config)
    recorded = quality_monitors(platform).recorded(table)["inference_log"]
    assert MonitorInferenceLog.from_dict(recorded).problem_type == (
        MonitorInferenceLogProblemType.PROBLEM_TYPE_CLASSIFICATION
    )
    assert (recorded["prediction_col"], recorded["label_col"]) == ("predicted_label", "churned")


# Every model input of the regression spec: the unpack task needs no feature table for this row.
SENT = {
    "customer_id": 7,
    "event_ts": "2024-05-01T09:30:00",
    "plan": "basic",
    "minutes": 2.0,
    "support_tickets": 1,
    "events_7d": 3.0,
    "mean_minutes_7d": 4.5,
}


def _payload(spark, served_entity_id: str):
    record = InferenceRecord(
        databricks_request_id=str(uuid.uuid4()),
        client_request_id=None,
        request_time=dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC),
        status_code=200,
        execution_duration_ms=5,
        request=json.dumps({"dataframe_records": [SENT]}),
        response=json.dumps({"predictions": [11.0]}),
        served_entity_id=served_entity_id,
        requester="local",
    )
    return spark.createDataFrame([record.as_row()], schema=PAYLOAD_DDL)


def test_on_an_empty_workspace_the_monitoring_job_creates_the_monitor_after_unpack(
    platform, spark, tmp_path, monkeypatch
):
    """The first deploy needs no monitored table: the bundle declares no `quality_monitors` resource,
    and the job's `quality_monitor` task runs after `unpack` created the table (local runner)."""
    monkeypatch.setenv("MLOPS_PROBLEM", REFERENCE)
    bundle = load_bundle(PROJECT_ROOT, "staging")
    assert not bundle.resources.get("quality_monitors")
    job = bundle.job("monitoring")
    tasks = {task["task_key"]: task for task in job["tasks"]}
    assert tasks["quality_monitor"]["depends_on"] == [{"task_key": "unpack"}]
    monitoring_table = next(
        p.split("=", 1)[1]
        for p in tasks["quality_monitor"]["python_wheel_task"]["parameters"]
        if p.startswith("--monitoring-table=")
    )
    payload_table = monitoring_table.removesuffix("_monitoring") + "_payload"
    entity = f"entity-{uuid.uuid4().hex}"
    platform.save_table(_payload(spark, entity), payload_table)
    entities = spark.createDataFrame(
        [(entity, "endpoint", "model-3", "CUSTOM_MODEL", "m.s.model", "3", dt.datetime(2024, 5, 1))],
        SERVED_ENTITIES_DDL,
    )
    known = platform.table_exists(SERVED_ENTITIES_TABLE)
    platform.save_table(entities, SERVED_ENTITIES_TABLE, mode="append" if known else "overwrite")
    assert not platform.table_exists(monitoring_table)

    trimmed = {"monitoring": {**job, "tasks": [tasks["unpack"], tasks["quality_monitor"]]}}
    result = LocalJobRunner(trimmed, platform.task_values, tmp_path / "runs").run("monitoring", {})

    assert [(r.task_key, r.status) for r in result.tasks] == [
        ("unpack", TaskStatus.SUCCESS),
        ("quality_monitor", TaskStatus.SUCCESS),
    ]
    recorded = quality_monitors(platform).recorded(monitoring_table)
    assert recorded["inference_log"]["model_id_col"] == "model_version"
    assert recorded["slicing_exprs"] == ["request_format", "variant"]
    assert recorded["assets_dir"].endswith(f"/monitoring/{bundle.variables['inference_table_prefix']}")
    assert recorded["inference_log"]["label_col"] == "bill"  # the problem's label
