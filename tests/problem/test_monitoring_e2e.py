"""The taxi example's monitoring end to end on small data: a trained champion behind the local
endpoint, simulated clean and drifted traffic, then the monitoring tasks unpack -> drift -> check,
and the retrain task value that the `check` notebook task of the real monitoring job sets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import typer
from mlflow import MlflowClient
from pyspark.sql import functions as F
from typer.testing import CliRunner

from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.bundle.runner import LocalJobRunner, TaskStatus
from mlops_laptop.monitoring.cli import simulate_traffic
from mlops_laptop.monitoring.simulate import load_held_out, request_body
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.serving.app import create_app
from mlops_laptop.serving.control_plane import ServingSettings
from mlops_laptop.serving.local_host import acquire_control_plane, open_control_plane
from mlops_laptop.serving.server import LocalServer
from mlops_template.monitoring.metrics import metrics_frame, window_table
from mlops_template.monitoring.tables import MonitoringTables
from mlops_template.monitoring.tracking import FIGURE_PATH
from mlops_template.problem.spec import PROBLEM
from mlops_template.registry.versions import get_aliases, promote
from mlops_template.tasks import (
    features,
    monitor_drift,
    monitor_unpack,
    prepare_data,
    publish_features,
    train,
)
from mlops_template.tasks.common import build_config
from mlops_template.tasks.deploy import DeployConfig
from mlops_template.tasks.deploy import run as deploy

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "monitoring_e2e"
MODEL = f"test.{SCHEMA}.fare_model"
EXPERIMENT = "/Shared/test-monitoring"
SCENARIOS = {"clean": False, "drifted": True}  # inference-table prefix -> --drift
KEYS_ONLY = "keys"  # the prefix of an endpoint sent request inputs only: the features are looked up
KEYS_ONLY_ROWS = 12
REQUESTS = 90
# One day windows (a run spans seconds); small windows judged; the latest window decides.
GRANULARITY = "1 day"
THRESHOLDS = json.dumps({"min_rows": 50, "min_labeled_rows": 20, "evaluation_windows": 1})


def run_task(platform: LocalPlatform, task, config_type, **arguments: str) -> None:
    """Run a task module's `run` with arguments given as the job passes them."""
    config = build_config(config_type, [f"--{k.replace('_', '-')}={v}" for k, v in arguments.items()])
    task.run(platform, config)


def run_check_notebook(platform: LocalPlatform, metrics_table: str) -> dict:
    """Task `check` of the real monitoring job (its notebook, run by the local runner with the job's
    parameters pushed down to its widgets) on `metrics_table`; the task values it set."""
    bundle = load_bundle(PROJECT_ROOT, "dev")
    check = next(t for t in bundle.job("monitoring")["tasks"] if t["task_key"] == "check")
    spec = {**check["notebook_task"], "base_parameters": {"metrics_table": metrics_table}}
    job = {
        "parameters": [
            {"name": "granularity", "default": GRANULARITY},
            {"name": "thresholds", "default": THRESHOLDS},
        ],
        "tasks": [{"task_key": "check", "notebook_task": spec}],
    }
    files = {"check_only": bundle.root / bundle.sources["resources.jobs.monitoring"]}
    runs = platform.state_dir / "runs"
    runner = LocalJobRunner({"check_only": job}, platform.task_values, runs, job_files=files)
    result = runner.run("check_only")
    assert result.task("check").status == TaskStatus.SUCCESS, result.task("check").error
    return result.task("check").values


def tables(prefix: str) -> MonitoringTables:
    return MonitoringTables("test", SCHEMA, prefix)


@pytest.fixture(scope="module")
def champion(platform: LocalPlatform) -> Iterator[None]:
    """Clean trips, feature tables and a promoted model, made by the pipeline's own tasks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GIT_SHA", "test-sha")
        schema = f"test.{SCHEMA}"
        run_task(
            platform,
            prepare_data,
            prepare_data.PrepareDataConfig,
            source_table="samples.nyctaxi.trips",
            schema=schema,
        )
        run_task(platform, features, features.FeaturesConfig, schema=schema)
        run_task(
            platform,
            publish_features,
            publish_features.PublishFeaturesConfig,
            schema=schema,
            online_store="monitoring-e2e",
        )
        run_task(
            platform,
            train,
            train.TrainConfig,
            schema=schema,
            experiment_name=EXPERIMENT,
            model_name=MODEL,
            bundle_target="test",
            job_run_id="1",
            training_params='{"n_estimators": 60, "num_leaves": 15, "learning_rate": 0.2}',
        )
    promote(MODEL, get_aliases(MODEL)["challenger"])
    yield


@pytest.fixture(scope="module")
def traffic(platform: LocalPlatform, champion: None) -> dict[str, str]:
    """The endpoints deployed and served; `mlops simulate-traffic` output per scenario, and
    KEYS_ONLY_ROWS keys-only trips sent to the KEYS_ONLY endpoint."""
    for prefix in [*SCENARIOS, KEYS_ONLY]:
        argv = [
            f"--model-name={MODEL}",
            f"--endpoint-name=fares-{prefix}",
            f"--schema=test.{SCHEMA}",
        ]
        argv += ["--inference-table-enabled=true", f"--inference-table-prefix={prefix}"]
        deploy(platform, build_config(DeployConfig, argv))
    app = typer.Typer()
    app.command()(simulate_traffic)
    outputs = {}
    lock = acquire_control_plane(platform.state_dir)  # the deployed endpoints, served as `mlops serve` does
    try:
        control_plane = open_control_plane(platform.state_dir, ServingSettings(table_flush_seconds=0.2))
        with (
            pytest.MonkeyPatch.context() as patch,
            LocalServer(create_app(control_plane=control_plane)) as server,
        ):
            patch.setenv("MLOPS_HOME", str(platform.state_dir.parent))
            for prefix, drift in SCENARIOS.items():
                args = ["-t", platform.target, "--url", server.url, "--endpoint", f"fares-{prefix}"]
                args += [
                    "--requests",
                    str(REQUESTS),
                    "--seed",
                    "5",
                    "--population",
                    str(platform.sample_rows),
                ]
                result = CliRunner().invoke(app, args + (["--drift"] if drift else []))
                assert result.exit_code == 0, result.output
                outputs[prefix] = result.output
            send_keys_only(platform, server.url)
    finally:
        lock.release()
    return outputs


def send_keys_only(platform: LocalPlatform, url: str) -> None:
    """Held-out trips with their request inputs only, each picked up a minute after the latest
    published pickup row of its zip: the endpoint looks their features up (the pickup ones found,
    the dropoff ones maybe defaulted) and logs the lookup."""
    latest = platform.read_table(f"test.{SCHEMA}.pickup_features").groupBy("zip").agg(F.max("ts"))
    published = dict(latest.collect())
    trips = load_held_out(platform.state_dir, PROBLEM, platform.sample_rows)
    trips = trips[trips["pickup_zip"].isin(published)].head(KEYS_ONLY_ROWS)
    pickup = trips["pickup_zip"].map(published) + pd.Timedelta(minutes=1)
    duration = trips["tpep_dropoff_datetime"] - trips["tpep_pickup_datetime"]
    trips = trips.assign(tpep_pickup_datetime=pickup, tpep_dropoff_datetime=pickup + duration)
    body = request_body(trips, "dataframe_records", "keys-only", PROBLEM)
    body["dataframe_records"] = [
        {name: value for name, value in record.items() if name not in PROBLEM.looked_up_inputs}
        for record in body["dataframe_records"]
    ]
    answer = requests.post(f"{url}/serving-endpoints/fares-{KEYS_ONLY}/invocations", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"predictions"}  # the lookup is logged, never sent to the client


def unpack(platform: LocalPlatform, prefix: str) -> None:
    """The monitoring job's `unpack` task over the tables of one scenario."""
    names = tables(prefix)
    run_task(
        platform,
        monitor_unpack,
        monitor_unpack.MonitorUnpackConfig,
        payload_table=names.payload,
        monitoring_table=names.monitoring,
        ground_truth_table=names.ground_truth,
        schema=f"test.{SCHEMA}",
    )


@pytest.fixture(scope="module")
def monitored(platform: LocalPlatform, traffic: dict[str, str]) -> dict[str, dict]:
    """unpack -> drift -> check per scenario; the task values `check` set."""
    values = {}
    for prefix in SCENARIOS:
        names = tables(prefix)
        unpack(platform, prefix)
        run_task(
            platform,
            monitor_drift,
            monitor_drift.MonitorDriftConfig,
            monitoring_table=names.monitoring,
            metrics_table=names.drift_metrics,
            schema=f"test.{SCHEMA}",
            model_name=MODEL,
            experiment_name=EXPERIMENT,
            bundle_target="test",
            job_run_id=f"monitoring-{prefix}",
            granularity=GRANULARITY,
            thresholds=THRESHOLDS,
        )
        values[prefix] = {"check": run_check_notebook(platform, names.drift_metrics)}
    return values


def test_the_simulator_sent_every_format_and_recorded_the_labels(platform, traffic, monitored):
    assert "Sent 90 requests" in traffic["clean"] and "drifted" in traffic["drifted"]
    rows = platform.read_table(tables("clean").monitoring)
    answered = rows.where(F.col("status_code") == 200)
    formats = {row[0] for row in answered.select("request_format").distinct().collect()}
    assert {"dataframe_split", "dataframe_records", "instances", "inputs"} <= formats
    simulated = answered.count()  # the endpoint's input-example check is not traffic: never logged
    assert answered.where(F.col("trip_id").isNotNull()).count() == simulated
    assert answered.where(F.col("fare_amount").isNotNull()).count() == simulated
    # The simulator sends every model input (times as ISO text); a null feature of a held-out row
    # goes as null, which the endpoint looks up (and logs): those rows alone are `online`.
    held_out = load_held_out(platform.state_dir, PROBLEM, platform.sample_rows).set_index("trip_id")
    sent = answered.select("trip_id", "feature_source", "defaulted_features").toPandas()
    nulls = held_out.loc[sent["trip_id"].astype("int64"), PROBLEM.looked_up_inputs].isna()
    assert sent["feature_source"].tolist() == ["online" if n else "request" for n in nulls.any(axis=1)]
    for defaulted, (_, null) in zip(sent["defaulted_features"], nulls.iterrows(), strict=True):
        assert set(defaulted) <= set(null[null].index)  # only what was not sent can be defaulted
    assert answered.where(F.col("tpep_pickup_datetime").isNull()).count() == 0
    drifted = platform.read_table(tables("drifted").monitoring).where(F.col("status_code") == 200)
    hours = {row[0] for row in drifted.select(F.hour("tpep_pickup_datetime")).distinct().collect()}
    assert hours <= set(range(16, 24))  # the spec's drift: every trip in the evening


def test_keys_only_rows_get_the_features_the_endpoint_looked_up(platform, traffic):
    """The endpoint's logged lookup (ENABLE_FEATURE_TRACING=true, which the deploy task sets:
    https://docs.databricks.com/aws/en/machine-learning/feature-store/automatic-feature-lookup) gives
    the unpacked rows their features, and says which were defaulted (the counts' default is 0)."""
    unpack(platform, KEYS_ONLY)
    rows = platform.read_table(tables(KEYS_ONLY).monitoring).where(F.col("status_code") == 200).toPandas()
    assert len(rows) == KEYS_ONLY_ROWS
    assert set(rows["feature_source"]) == {"online"}
    defaulted = [set(names) for names in rows["defaulted_features"]]
    assert all(names <= set(PROBLEM.looked_up_inputs) for names in defaulted)
    pickup = {"mean_fare_window_1h_pickup_zip", "count_trips_window_1h_pickup_zip"}
    assert not any(names & pickup for names in defaulted)  # a row published a minute before
    assert rows["mean_fare_window_1h_pickup_zip"].notna().all()
    for (_, row), names in zip(rows.iterrows(), defaulted, strict=True):
        if "count_trips_window_30m_dropoff_zip" in names:
            assert row["count_trips_window_30m_dropoff_zip"] == 0.0
        else:
            assert row["count_trips_window_30m_dropoff_zip"] >= 1


def test_clean_traffic_does_not_trigger_retraining(platform, monitored):
    check = monitored["clean"]["check"]
    assert check["retrain"] == "false", check["reasons"]
    assert check["reasons"] == ["0 of 1 judged windows violate (retrain at 1)"]
    windows = window_table(metrics_frame(platform.read_table(tables("clean").drift_metrics), GRANULARITY))
    assert windows["rmse"].iloc[-1] < 5.0
    assert windows["rows"].iloc[-1] >= 50
    psi = window_table(metrics_frame(platform.read_table(tables("clean").drift_metrics), GRANULARITY), "psi")
    assert psi["prediction"].iloc[-1] < 0.25  # served predictions vs the champion's on the baseline
    assert windows["latency_p50_ms"].iloc[-1] <= windows["latency_p99_ms"].iloc[-1]


def test_drifted_traffic_triggers_retraining_naming_the_drift(platform, monitored):
    check = monitored["drifted"]["check"]
    assert check["retrain"] == "true"
    reasons = " ".join(check["reasons"])
    assert "psi(trip_distance)" in reasons and "rmse=" in reasons
    assert "tpep_pickup_datetime" not in reasons  # times are no drift columns
    assert "psi(prediction)" in reasons  # longer trips: dearer fares than the champion's baseline
    assert "psi(dropoff_zip)" not in reasons  # untouched inputs do not drift
    psi = window_table(
        metrics_frame(platform.read_table(tables("drifted").drift_metrics), GRANULARITY), "psi"
    )
    assert psi["trip_distance"].iloc[-1] > 0.5


def test_the_drift_run_is_logged_in_the_training_experiment_with_its_plot(platform, monitored):
    [run] = MlflowClient().search_runs(
        [platform.experiment_id(EXPERIMENT)], filter_string="tags.job_run_id = 'monitoring-drifted'"
    )
    run_id = run.info.run_id
    assert run.data.tags["monitoring"] == "true"
    assert run.data.metrics["psi_trip_distance"] > 0.5
    assert FIGURE_PATH in [a.path for a in MlflowClient().list_artifacts(run_id, "monitoring")]
    assert mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=FIGURE_PATH).endswith(".png")


def test_a_rerun_unpacks_nothing_new_and_keeps_the_metrics(platform, monitored):
    names = tables("clean")
    before = platform.read_table(names.monitoring).count()
    unpack(platform, "clean")
    assert platform.read_table(names.monitoring).count() == before
