"""Unpacking payload rows on real local Spark: formats, errors, incremental runs, labels, the model
version of each row from `system.serving.served_entities`, for a regressor (the regression flavour of
churn, tests/regression_spec.py) and a classifier's rows (churn spec)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from churn_example.spec import PROBLEM as CHURN
from conftest import CHURN_SCHEMA
from mlops_laptop.monitoring.ground_truth import ground_truth_dir, write_ground_truth
from mlops_laptop.monitoring.simulate import FORMATS, request_body
from mlops_laptop.serving.inference_table import PAYLOAD_DDL, InferenceRecord
from mlops_laptop.serving.local_deploy import record_served_entities
from mlops_template.monitoring.ground_truth import read_labels
from mlops_template.monitoring.unpack import MonitoringTableError, monitoring_columns, unpack_into
from mlops_template.platform import MissingTableError
from mlops_template.platform.feature_store import LookupSpec
from mlops_template.problem_spec import ModelInput
from mlops_template.serving.served_entities import SERVED_ENTITIES_TABLE, served_entity_id
from mlops_template.serving.spec import InferenceTableSpec, endpoint_config
from mlops_template.tasks import monitor_unpack
from mlops_template.tasks.common import build_config
from regression_spec import PROBLEM as BILL

T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
LATE = dt.timedelta(minutes=120)
BIG_ROW_ID = -8793004155013582123
ENDPOINT = "unpack-endpoint"
SCHEMA = CHURN_SCHEMA  # the feature tables (conftest's churn_schema fixture makes them)


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


def _column(model_input: ModelInput, rows: int) -> list:
    """Values of one input's type: plans, integers (ids, tickets), times a minute apart, numbers."""
    if model_input.type == "string":
        return [("basic", "premium")[i % 2] for i in range(rows)]
    if model_input.type in ("long", "integer"):
        return [i % 5 + 1 for i in range(rows)]
    if model_input.type == "datetime":
        return [T0.replace(tzinfo=None) + dt.timedelta(minutes=i) for i in range(rows)]
    return [float(i % 7 + 1) for i in range(rows)]


def events(first_id: int, rows: int) -> pd.DataFrame:
    """Rows to send: ids from `first_id` and every model input (the looked-up ones too)."""
    inputs = {model_input.name: _column(model_input, rows) for model_input in BILL.model_inputs}
    return pd.DataFrame({"event_id": list(range(first_id, first_id + rows)), **inputs})


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
    result = unpack_into(platform, payload(spark, records), table, None, LATE, BILL, SCHEMA)
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
    unpack_into(platform, payload(spark, records), table, None, LATE, BILL, SCHEMA)
    versions = dict(platform.read_table(table).select("event_id", "model_version").collect())
    assert versions == {"1": "3", "2": "3", "3": "7", "4": None}


def test_refused_requests_are_kept_with_status_and_error_code(platform, spark, table):
    records = [
        refused('{"dataframe_records": [{"minutes": "far"}]}', T0),
        refused("{not json", T0),
        refused('{"inputs": {}}', T0, status=500, code="INTERNAL_ERROR"),
        answered(events(1, 2), "dataframe_split", T0),
    ]
    unpack_into(platform, payload(spark, records), table, None, LATE, BILL, SCHEMA)
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
    assert unpack_into(platform, payload(spark, first), table, None, LATE, BILL, SCHEMA).requests == 2
    assert (
        unpack_into(platform, payload(spark, first), table, None, LATE, BILL, SCHEMA).requests == 0
    )  # idempotent
    late = answered(events(10, 1), "dataframe_records", T0 - dt.timedelta(minutes=30))  # arrived after
    too_late = answered(events(20, 1), "dataframe_records", T0 - dt.timedelta(hours=3))
    newer = answered(events(30, 4), "dataframe_split", T0 + dt.timedelta(hours=1))
    result = unpack_into(
        platform, payload(spark, [*first, late, too_late, newer]), table, None, LATE, BILL, SCHEMA
    )
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
    unpack_into(
        platform, payload(spark, records), table, read_labels(platform, truth, BILL), LATE, BILL, SCHEMA
    )
    labels = dict(platform.read_table(table).select("event_id", "bill").collect())
    assert labels == {"1": 7.5, "2": None, str(BIG_ROW_ID): 30.0}
    write_ground_truth(directory, pd.DataFrame({"event_id": [2], "bill": [12.0]}), "event_id", "bill")
    result = unpack_into(
        platform, payload(spark, records), table, read_labels(platform, truth, BILL), LATE, BILL, SCHEMA
    )
    assert (result.requests, result.completed) == (0, 1)
    assert dict(platform.read_table(table).select("event_id", "bill").collect())["2"] == 12.0
    assert read_labels(platform, "test.monitoring_unpack.no_truth", BILL) is None


def test_a_classifiers_rows_keep_string_inputs_and_get_the_probability_of_label_1(platform, spark, table):
    """Churn (binary classification, a string input `plan`): the served model answers per-class
    probabilities; the row gets P(churned = 1), the label at the spec's threshold and the label."""
    sent = events(5, 3).assign(event_id=[BIG_ROW_ID, 5, 6], plan=["basic", None, "premium"])
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
    unpack_into(
        platform, payload(spark, records), table, read_labels(platform, truth, CHURN), LATE, CHURN, SCHEMA
    )
    rows = platform.read_table(table)
    assert rows.columns == monitoring_columns(CHURN)
    types = dict(rows.dtypes)
    assert (types["plan"], types["support_tickets"], types["minutes"]) == ("string", "int", "double")
    assert (types["event_ts"], types["customer_id"]) == ("timestamp", "bigint")
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
        f"--schema={SCHEMA}",
        "--inference-table-enabled=false",
    ]
    monitor_unpack.run(platform, build_config(monitor_unpack.MonitorUnpackConfig, argv))
    assert not platform.table_exists(table)
    enabled = build_config(monitor_unpack.MonitorUnpackConfig, argv[:3])
    with pytest.raises(MissingTableError, match="_payload does not exist.*inference tables on"):
        monitor_unpack.run(platform, enabled)


def test_a_version_recorded_after_the_request_is_filled_in_by_a_later_run(platform, spark, table):
    """`system.serving.served_entities` fills with a delay on Databricks: a row unpacked before its
    served entity is known keeps an empty version until a later run completes it."""
    later = _config("11")
    request = answered(
        events(40, 1), "inputs", T0, served=served_entity_id(ENDPOINT, later.served_entities[0])
    )
    unpack_into(platform, payload(spark, [request]), table, None, LATE, BILL, SCHEMA)
    assert platform.read_table(table).first()["model_version"] is None
    record_served_entities(platform, later)
    result = unpack_into(platform, payload(spark, [request]), table, None, LATE, BILL, SCHEMA)
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
                platform,
                payload(spark, [answered(events(50, 2), "inputs", T0)]),
                table,
                None,
                LATE,
                BILL,
                SCHEMA,
            )
    finally:
        spark.sql(f"ALTER TABLE {local}_hidden RENAME TO {local}")
    assert result.rows == 2
    assert {row["model_version"] for row in platform.read_table(table).collect()} == {None}
    assert "grants the job's principal SELECT" in caplog.text
    assert unpack_into(platform, payload(spark, []), table, None, LATE, BILL, SCHEMA).completed == 2


# --- where the looked-up inputs come from --------------------------------------------------------


def _with_default(tables: dict[str, str]) -> list:
    """Churn's lookup, with 0 events for a customer without activity in the lookback window."""
    return [
        dataclasses.replace(LookupSpec.of(lookup), default_values={"events_7d": 0.0}).to_feature_lookup()
        for lookup in CHURN.feature_lookups(tables)
    ]


WITH_DEFAULT = dataclasses.replace(BILL, name="churn_bill_defaults", feature_lookups=_with_default)
FEATURES = ["events_7d", "mean_minutes_7d"]


def request(rows: pd.DataFrame, at: dt.datetime, response: dict) -> InferenceRecord:
    body = request_body(rows, "dataframe_records", "features", WITH_DEFAULT)
    return InferenceRecord(
        databricks_request_id=str(uuid.uuid4()),
        client_request_id="features",
        request_time=at,
        status_code=200,
        execution_duration_ms=3,
        request=json.dumps(body),
        response=json.dumps({"predictions": [20.0] * len(rows)} | response),
        served_entity_id=CHAMPION_3,
        requester="local",
    )


def as_of(rows: pd.DataFrame, activity: pd.DataFrame) -> pd.DataFrame:
    """Each row's activity features as of its event time, by pandas' merge_asof: the latest
    activity row of its customer at or before the event, at most 1 day (the lookup's lookback) older."""
    left = rows.drop(columns=FEATURES).astype({"event_ts": "datetime64[ns]"}).sort_values("event_ts")
    right = activity.astype({"ts": "datetime64[ns]"}).sort_values("ts")
    joined = pd.merge_asof(
        left, right, left_on="event_ts", right_on="ts", by="customer_id", tolerance=pd.Timedelta(days=1)
    )
    return joined.set_index("event_id")


def test_features_come_from_the_request_else_the_endpoints_lookup_else_the_offline_tables(
    platform, spark, table, churn_schema
):
    """Sent values win over the lookup (databricks/ml_features/entities/training_set.py
    `join_feature_data_if_not_overridden`); the endpoint's lookup is read from its logged response;
    without it (Databricks logs it only with ENABLE_FEATURE_TRACING=true:
    https://docs.databricks.com/aws/en/machine-learning/feature-store/automatic-feature-lookup) a
    point-in-time lookup of the offline tables gives what the endpoint would have looked up, with
    `default_values` filling a missing row as Databricks' TrainingSet does (`fillna`)."""
    prepared = platform.read_table(f"{churn_schema}.bill_events").orderBy(F.xxhash64("event_id")).limit(24)
    rows = prepared.toPandas().assign(events_7d=np.nan, mean_minutes_7d=np.nan)
    rows.loc[0, "customer_id"] = 10**6  # no activity at all: both outputs defaulted
    rows.loc[1, "events_7d"] = 9.0  # sent: kept, only the other output is looked up
    sent = events(1, 2).assign(events_7d=[100.0, 101.0], mean_minutes_7d=[200.0, 201.0])
    logged = events(3, 2)[["event_id", "customer_id", "event_ts", "plan", "minutes", "support_tickets"]]
    lookup = {"columns": FEATURES, "data": [[1.5, 2.5], [0.0, None]], "defaulted": [[], FEATURES]}
    records = [
        request(sent, T0, {}),
        request(
            logged.assign(events_7d=np.nan, mean_minutes_7d=np.nan),
            T0,
            {"databricks_output": {"feature_lookup": lookup}},
        ),
        *[request(rows.iloc[start : start + 4], T0, {}) for start in range(0, len(rows), 4)],
    ]
    unpack_into(platform, payload(spark, records), table, None, LATE, WITH_DEFAULT, churn_schema)
    unpacked = platform.read_table(table).toPandas().set_index("event_id")
    assert unpacked.loc[["1", "2"], "feature_source"].tolist() == ["request", "request"]
    assert unpacked.loc[["1", "2"], FEATURES].to_numpy().tolist() == [[100.0, 200.0], [101.0, 201.0]]
    assert unpacked.loc[["3", "4"], "feature_source"].tolist() == ["online", "online"]
    assert (
        unpacked.loc["3", FEATURES].tolist() == [1.5, 2.5]
        and list(unpacked.loc["3", "defaulted_features"]) == []
    )
    assert unpacked.loc["4", "events_7d"] == 0.0 and np.isnan(unpacked.loc["4", "mean_minutes_7d"])
    assert list(unpacked.loc["4", "defaulted_features"]) == FEATURES

    activity = platform.read_table(f"{churn_schema}.customer_activity").toPandas()
    expected = as_of(rows, activity)
    offline = unpacked.loc[[str(i) for i in expected.index]]
    assert set(offline["feature_source"]) == {"offline"}
    found = expected["ts"].notna()
    assert 0 < (~found).sum() < len(found)  # some rows have no activity row in the lookback window
    sent_events = rows.set_index("event_id")["events_7d"].reindex(expected.index)
    np.testing.assert_allclose(
        offline["events_7d"].to_numpy(float),
        sent_events.fillna(expected["events_7d"]).fillna(0.0).to_numpy(float),  # sent, looked up, default
    )
    np.testing.assert_allclose(
        offline["mean_minutes_7d"].to_numpy(float), expected["mean_minutes_7d"].to_numpy(float)
    )
    wanted = [
        [name for name in FEATURES if not (has_row or (name == "events_7d" and not np.isnan(kept)))]
        for has_row, kept in zip(found, sent_events, strict=True)
    ]
    assert [list(value) for value in offline["defaulted_features"]] == wanted
    assert offline.loc[str(rows.loc[0, "event_id"]), "events_7d"] == 0.0
    times = offline["event_ts"].astype("datetime64[ns]").tolist()
    assert (
        times
        == rows.set_index("event_id")["event_ts"].reindex(expected.index).astype("datetime64[ns]").tolist()
    )


def test_an_older_table_gains_the_new_columns_and_keeps_the_inputs_of_older_models(platform, spark, table):
    """A table written before the model took `event_ts` and before rows said where their features
    came from: those columns are added (null in older rows: unknown), a column an older model took
    stays (null in newer rows), also when an older row is completed with its label later."""
    first = answered(events(1, 2), "inputs", T0)
    before = f"{table}_before"
    unpack_into(platform, payload(spark, [first]), before, None, LATE, BILL, SCHEMA)
    older = platform.read_table(before).drop("feature_source", "defaulted_features", "event_ts")
    platform.save_table(older.withColumn("hour", F.lit(10)), table)
    second = answered(events(3, 1), "inputs", T0 + dt.timedelta(minutes=5))
    assert unpack_into(platform, payload(spark, [first, second]), table, None, LATE, BILL, SCHEMA).rows == 1
    truth = table.replace(".t_", ".truth_")
    write_ground_truth(
        ground_truth_dir(platform.state_dir, truth),
        pd.DataFrame({"event_id": [1], "bill": [7.0]}),
        "event_id",
        "bill",
    )
    labels = read_labels(platform, truth, BILL)
    assert (
        unpack_into(platform, payload(spark, [first, second]), table, labels, LATE, BILL, SCHEMA).completed
        == 1
    )
    rows = {row["event_id"]: row for row in platform.read_table(table).collect()}
    assert set(monitoring_columns(BILL)) | {"hour"} == set(platform.read_table(table).columns)
    assert (rows["1"]["hour"], rows["1"]["feature_source"], rows["1"]["event_ts"], rows["1"]["bill"]) == (
        10,
        None,
        None,
        7.0,
    )
    assert (rows["3"]["hour"], rows["3"]["feature_source"], list(rows["3"]["defaulted_features"])) == (
        None,
        "request",
        [],
    )
    assert rows["3"]["event_ts"] == T0.replace(tzinfo=None)


def test_a_column_whose_type_changed_asks_to_rebuild_the_table(platform, spark, table):
    before = f"{table}_before"
    unpack_into(
        platform, payload(spark, [answered(events(1, 1), "inputs", T0)]), before, None, LATE, BILL, SCHEMA
    )
    platform.save_table(
        platform.read_table(before).withColumn("customer_id", F.col("customer_id").cast("double")), table
    )
    with pytest.raises(
        MonitoringTableError, match=r"customer_id \(double -> bigint\)\. Drop \(or rename\) the table"
    ):
        unpack_into(
            platform, payload(spark, [answered(events(2, 1), "inputs", T0)]), table, None, LATE, BILL, SCHEMA
        )
