"""Unpacking payload rows on real local Spark: formats, errors, incremental runs, labels, the model
version of each row from `system.serving.served_entities`, for a regressor (the regression flavour of
churn, tests/regression_spec.py) and a classifier's rows (churn spec)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pandas as pd
import pytest
from pyspark.sql import functions as F

from churn_example.spec import PROBLEM as CHURN
from mlops_laptop.monitoring.ground_truth import ground_truth_dir, write_ground_truth
from mlops_laptop.monitoring.simulate import FORMATS, request_body
from mlops_laptop.serving.inference_table import PAYLOAD_DDL, InferenceRecord
from mlops_laptop.serving.local_deploy import record_served_entities
from mlops_template.monitoring.ground_truth import read_labels
from mlops_template.monitoring.unpack import monitoring_columns, unpack_into
from mlops_template.platform import MissingTableError
from mlops_template.serving.served_entities import SERVED_ENTITIES_TABLE, served_entity_id
from mlops_template.serving.spec import InferenceTableSpec, endpoint_config
from mlops_template.tasks import monitor_unpack
from mlops_template.tasks.common import build_config
from regression_spec import PROBLEM as BILL

T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
LATE = dt.timedelta(minutes=120)
BIG_ROW_ID = -8793004155013582123
ENDPOINT = "unpack-endpoint"


def _config(champion: str, challenger: str | None = None):
    return endpoint_config(
        endpoint_name=ENDPOINT,
        model_name="test.monitoring_unpack.model",
        champion_version=champion,
        challenger_version=challenger,
        challenger_traffic_percent=20 if challenger else 0,
        workload_size="Small",
        scale_to_zero=True,
        inference_table=InferenceTableSpec(
            enabled=True, catalog_name="test", schema_name="monitoring_unpack", table_name_prefix="served"
        ),
        git_sha="test",
    )


CHAMPION_3, CHALLENGER_7 = (served_entity_id(ENDPOINT, e) for e in _config("3", "7").served_entities)


@pytest.fixture(scope="module", autouse=True)
def served_entities(platform) -> None:
    """The served entities of versions 3 and 7 in the local system table, as the deployer records them."""
    record_served_entities(platform, _config("3", "7"))


def events(first_id: int, rows: int) -> pd.DataFrame:
    """Rows to send: ids from `first_id`, a plan (the string input) and numbers for the other inputs."""
    numbers = {name: [float(i % 7 + 1) for i in range(rows)] for name in BILL.input_names if name != "plan"}
    plans = [("basic", "premium")[i % 2] for i in range(rows)]
    return pd.DataFrame({"event_id": list(range(first_id, first_id + rows)), "plan": plans, **numbers})


def answered(
    rows: pd.DataFrame, request_format: str, at: dt.datetime, served: str = CHAMPION_3
) -> InferenceRecord:
    predictions = [10.0 + i for i in range(len(rows))]
    return InferenceRecord(
        databricks_request_id=str(uuid.uuid4()),
        client_request_id=f"client-{request_format}",
        request_time=at,
        status_code=200,
        execution_duration_ms=12,
        request=json.dumps(request_body(rows, request_format, f"client-{request_format}", BILL)),
        response=json.dumps({"predictions": predictions}),
        served_entity_id=served,
        requester="local",
    )


def refused(body: str, at: dt.datetime, status: int = 400, code: str = "BAD_REQUEST") -> InferenceRecord:
    return InferenceRecord(
        databricks_request_id=str(uuid.uuid4()),
        client_request_id=None,
        request_time=at,
        status_code=status,
        execution_duration_ms=1,
        request=body,
        response=json.dumps({"error_code": code, "message": "refused"}),
        served_entity_id=CHAMPION_3,
        requester="local",
    )


@pytest.fixture
def table() -> str:
    return f"test.monitoring_unpack.t_{uuid.uuid4().hex[:8]}"


def payload(spark, records: list[InferenceRecord]):
    return spark.createDataFrame([record.as_row() for record in records], schema=PAYLOAD_DDL)


def test_every_request_format_becomes_one_row_per_prediction(platform, spark, table):
    sent = events(BIG_ROW_ID, 3)
    records = [answered(sent, request_format, T0) for request_format in FORMATS]
    result = unpack_into(platform, payload(spark, records), table, None, LATE, BILL)
    rows = platform.read_table(table)
    assert rows.columns == monitoring_columns(BILL)
    assert (result.requests, result.rows, result.completed) == (4, 12, 0)
    frame = rows.toPandas()
    for request_format in FORMATS:
        one = frame[frame["request_format"] == request_format].sort_values("row_index")
        assert one["event_id"].tolist() == [str(i) for i in sent["event_id"]]  # int64 ids exactly, as text
        assert one["prediction"].tolist() == [10.0, 11.0, 12.0]
        assert one["minutes"].tolist() == sent["minutes"].tolist()
        assert one["plan"].tolist() == sent["plan"].tolist()  # a string input stays text
        assert set(one["model_version"]) == {"3"}
        assert set(one["status_code"]) == {200}


def test_the_model_version_comes_from_the_served_entities_table(platform, spark, table):
    """Databricks logs an opaque `served_entity_id`, "the unique ID of the served entity", and
    `system.serving.served_entities` (one row per served entity and configuration change) names its
    `entity_name` and `entity_version` (https://docs.databricks.com/aws/en/ai-gateway/inference-tables);
    the version is read from that join on both platforms, never parsed out of the id."""
    record_served_entities(platform, _config("3", "7"))  # recording again adds no row
    entities = platform.read_table(SERVED_ENTITIES_TABLE).where(F.col("endpoint_name") == ENDPOINT)
    assert sorted((r.served_entity_name, r.entity_version) for r in entities.collect()) == [
        ("model-3", "3"),
        ("model-7", "7"),
    ]
    records = [
        answered(events(1, 2), "dataframe_records", T0, served=CHAMPION_3),
        answered(events(3, 1), "inputs", T0, served=CHALLENGER_7),
        answered(events(4, 1), "instances", T0, served="0" * 32),  # an id no deployment recorded
    ]
    unpack_into(platform, payload(spark, records), table, None, LATE, BILL)
    versions = dict(platform.read_table(table).select("event_id", "model_version").collect())
    assert versions == {"1": "3", "2": "3", "3": "7", "4": None}


def test_refused_requests_are_kept_with_status_and_error_code(platform, spark, table):
    records = [
        refused('{"dataframe_records": [{"minutes": "far"}]}', T0),
        refused("{not json", T0),
        refused('{"inputs": {}}', T0, status=500, code="INTERNAL_ERROR"),
        answered(events(1, 2), "dataframe_split", T0),
    ]
    unpack_into(platform, payload(spark, records), table, None, LATE, BILL)
    errors = platform.read_table(table).where(F.col("status_code") != 200).toPandas()
    kinds = zip(
        errors["status_code"], errors["error_code"], errors["request_format"].fillna("-"), strict=True
    )
    assert sorted(kinds) == [
        (400, "BAD_REQUEST", "-"),
        (400, "BAD_REQUEST", "dataframe_records"),
        (500, "INTERNAL_ERROR", "inputs"),
    ]
    assert set(errors["row_index"]) == {0}
    assert errors[["minutes", "prediction", "event_id"]].isna().all().all()


def test_a_rerun_unpacks_only_new_requests(platform, spark, table):
    first = [
        answered(events(1, 2), "instances", T0),
        answered(events(3, 1), "inputs", T0 + dt.timedelta(minutes=5)),
    ]
    assert unpack_into(platform, payload(spark, first), table, None, LATE, BILL).requests == 2
    assert unpack_into(platform, payload(spark, first), table, None, LATE, BILL).requests == 0  # idempotent
    late = answered(events(10, 1), "dataframe_records", T0 - dt.timedelta(minutes=30))  # arrived after
    too_late = answered(events(20, 1), "dataframe_records", T0 - dt.timedelta(hours=3))
    newer = answered(events(30, 4), "dataframe_split", T0 + dt.timedelta(hours=1))
    result = unpack_into(platform, payload(spark, [*first, late, too_late, newer]), table, None, LATE, BILL)
    assert (result.requests, result.rows) == (2, 5)
    rows = platform.read_table(table)
    assert rows.count() == 3 + 5
    assert rows.select("databricks_request_id", "row_index").distinct().count() == 8
    assert rows.where(F.col("event_id") == "20").count() == 0  # beyond the late-arrival margin


def test_labels_join_now_and_later_from_the_ground_truth_files(platform, spark, table):
    truth = table.replace(".t_", ".truth_")
    directory = ground_truth_dir(platform.state_dir, truth)
    first = pd.DataFrame({"event_id": [1, BIG_ROW_ID], "bill": [7.5, 30.0]})
    write_ground_truth(directory, first, "event_id", "bill")
    records = [answered(events(1, 2), "instances", T0), answered(events(BIG_ROW_ID, 1), "inputs", T0)]
    unpack_into(platform, payload(spark, records), table, read_labels(platform, truth, BILL), LATE, BILL)
    labels = dict(platform.read_table(table).select("event_id", "bill").collect())
    assert labels == {"1": 7.5, "2": None, str(BIG_ROW_ID): 30.0}
    write_ground_truth(directory, pd.DataFrame({"event_id": [2], "bill": [12.0]}), "event_id", "bill")
    result = unpack_into(
        platform, payload(spark, records), table, read_labels(platform, truth, BILL), LATE, BILL
    )
    assert (result.requests, result.completed) == (0, 1)
    assert dict(platform.read_table(table).select("event_id", "bill").collect())["2"] == 12.0
    assert read_labels(platform, "test.monitoring_unpack.no_truth", BILL) is None


def test_a_classifiers_rows_keep_string_inputs_and_get_the_probability_of_label_1(platform, spark, table):
    """Churn (binary classification, a string input `plan`): the served model answers per-class
    probabilities; the row gets P(churned = 1), the label at the spec's threshold and the label."""
    sent = pd.DataFrame(
        {
            "event_id": [BIG_ROW_ID, 5, 6],
            "plan": ["basic", None, "premium"],
            **{name: [1.0, 2.0, None] for name in CHURN.input_names[1:]},
        }
    )
    records = [
        InferenceRecord(
            databricks_request_id=str(uuid.uuid4()),
            client_request_id="churn",
            request_time=T0,
            status_code=200,
            execution_duration_ms=9,
            request=json.dumps(request_body(sent, request_format, "churn", CHURN)),
            response=json.dumps({"predictions": [[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]]}),
            served_entity_id=CHAMPION_3,
            requester="local",
        )
        for request_format in ("dataframe_split", "inputs")
    ]
    truth = table.replace(".t_", ".churn_truth_")
    labels = pd.DataFrame({"event_id": [BIG_ROW_ID, 6], "churned": [1, 0]})
    write_ground_truth(ground_truth_dir(platform.state_dir, truth), labels, "event_id", "churned")
    unpack_into(platform, payload(spark, records), table, read_labels(platform, truth, CHURN), LATE, CHURN)
    rows = platform.read_table(table)
    assert rows.columns == monitoring_columns(CHURN)
    assert dict(rows.dtypes)["plan"] == "string" and dict(rows.dtypes)["support_tickets"] == "double"
    frame = rows.where(F.col("request_format") == "inputs").toPandas().sort_values("row_index")
    assert frame["plan"].tolist() == ["basic", None, "premium"]
    assert frame["event_id"].tolist() == [str(BIG_ROW_ID), "5", "6"]
    assert frame["prediction"].tolist() == [0.7, 0.4, 0.5]
    assert frame["predicted_label"].tolist() == [1.0, 0.0, 1.0]  # the threshold 0.5 counts as 1
    assert frame["churned"].fillna(-1).tolist() == [1.0, -1, 0.0]


def test_the_task_skips_disabled_inference_tables_and_names_a_missing_one(platform, table):
    argv = [
        f"--payload-table={table}_payload",
        f"--monitoring-table={table}",
        "--inference-table-enabled=false",
    ]
    monitor_unpack.run(platform, build_config(monitor_unpack.MonitorUnpackConfig, argv))
    assert not platform.table_exists(table)
    enabled = build_config(monitor_unpack.MonitorUnpackConfig, argv[:2])
    with pytest.raises(MissingTableError, match="_payload does not exist.*inference tables on"):
        monitor_unpack.run(platform, enabled)


def test_a_version_recorded_after_the_request_is_filled_in_by_a_later_run(platform, spark, table):
    """`system.serving.served_entities` fills with a delay on Databricks: a row unpacked before its
    served entity is known keeps an empty version until a later run completes it."""
    later = _config("11")
    request = answered(
        events(40, 1), "inputs", T0, served=served_entity_id(ENDPOINT, later.served_entities[0])
    )
    unpack_into(platform, payload(spark, [request]), table, None, LATE, BILL)
    assert platform.read_table(table).first()["model_version"] is None
    record_served_entities(platform, later)
    result = unpack_into(platform, payload(spark, [request]), table, None, LATE, BILL)
    assert (result.requests, result.completed) == (0, 1)
    assert platform.read_table(table).first()["model_version"] == "11"


def test_without_the_served_entities_table_unpack_goes_on_and_says_what_to_grant(
    platform, spark, table, caplog
):
    """On Databricks only account admins may query `system.serving.served_entities` until they grant
    SELECT (https://docs.databricks.com/aws/en/ai-gateway/configure-ai-gateway-endpoints): monitoring
    must not fail for it."""
    local = platform.table_name(SERVED_ENTITIES_TABLE)
    spark.sql(f"ALTER TABLE {local} RENAME TO {local}_hidden")
    try:
        with caplog.at_level("WARNING", logger="mlops_template.monitoring.unpack"):
            result = unpack_into(
                platform, payload(spark, [answered(events(50, 2), "inputs", T0)]), table, None, LATE, BILL
            )
    finally:
        spark.sql(f"ALTER TABLE {local}_hidden RENAME TO {local}")
    assert result.rows == 2
    assert {row["model_version"] for row in platform.read_table(table).collect()} == {None}
    assert "grants the job's principal SELECT" in caplog.text
    assert unpack_into(platform, payload(spark, []), table, None, LATE, BILL).completed == 2
