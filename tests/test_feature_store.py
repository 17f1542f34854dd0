"""The local feature store: keyed merge writes, point-in-time lookups, the features task, training sets.

Hand-made rows with neutral names for the store itself; the churn problem of tests/churn (its
prepared and feature tables, made once per session) for the features task and scoring rows."""

from __future__ import annotations

import datetime as dt

import mlflow
import numpy as np
import pytest
from databricks.feature_engineering import FeatureLookup
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema
from pyspark.sql import functions as F
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from churn_example.spec import PROBLEM as CHURN
from mlops_laptop.platform.local_feature_store import PRIMARY_KEYS_PROPERTY, FeatureStoreError
from mlops_laptop.platform.online_store import OnlineTable, snapshot_path
from mlops_template.platform import MissingTableError
from mlops_template.platform.feature_store import FEATURE_LOOKUPS_METADATA, LookupSpec
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.tasks import publish_features
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.features import FeaturesConfig, run
from mlops_template.training.dataset import build_feature_set

T = dt.datetime  # the session time zone is UTC, so naive datetimes read as they print
KEYS = {"primary_keys": ["key", "ts"], "timestamp_key": "ts", "description": "test features"}


def _features(spark, rows):
    return spark.createDataFrame(rows, "key int, ts timestamp, v double")


def _lookups(spark, rows):
    return spark.createDataFrame(rows, "id int, key int, t timestamp, label double")


@pytest.fixture(scope="module")
def history(platform, spark):
    """Key 1: v=1 at 10:00, v=2 at 10:30, v=3 at 12:00; key 2: v=5 at 10:00, v=null at 11:00."""
    rows = [
        (1, T(2016, 1, 4, 10), 1.0),
        (1, T(2016, 1, 4, 10, 30), 2.0),
        (1, T(2016, 1, 4, 12), 3.0),
        (2, T(2016, 1, 4, 10), 5.0),
        (2, T(2016, 1, 4, 11), None),
    ]
    platform.feature_store.write_table("test.fs_asof.history", _features(spark, rows), **KEYS)
    return "test.fs_asof.history"


@pytest.fixture(scope="module")
def lookups(spark):
    return _lookups(
        spark,
        [
            (1, 1, T(2016, 1, 4, 10, 30), 7.0),  # exact match
            (2, 1, T(2016, 1, 4, 10, 29, 59), 7.0),  # just before 10:30: the 10:00 row
            (3, 1, T(2016, 1, 4, 10, 30, 1), 7.0),  # just after 10:30
            (4, 1, T(2016, 1, 4, 11, 59, 59), 7.0),  # just before 12:00: never the 12:00 row
            (5, 1, T(2016, 1, 4, 11, 30), 7.0),  # exactly 1 hour after 10:30
            (6, 1, T(2016, 1, 4, 9, 59), 7.0),  # before any row
            (7, 3, T(2016, 1, 4, 10, 30), 7.0),  # a key without features
            (8, 2, T(2016, 1, 4, 11, 30), 7.0),  # latest row has a null feature: null, not the older 5
            (8, 2, T(2016, 1, 4, 11, 30), 7.0),  # a duplicate row stays
            (9, 1, None, 7.0),  # no lookup time
        ],
    )


def _joined(platform, lookups, lookup, **options):
    training_set = platform.feature_store.create_training_set(lookups, [lookup], label="label", **options)
    return training_set.load_df()


def _values(df, column="v"):
    return sorted((row["id"], row[column]) for row in df.collect())


def test_as_of_join_takes_the_latest_row_at_or_before_the_lookup_time(platform, history, lookups):
    joined = _joined(platform, lookups, FeatureLookup(history, "key", timestamp_lookup_key="t"))
    assert joined.columns == ["id", "key", "t", "v", "label"]
    assert _values(joined) == [
        (1, 2.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0),
        (6, None), (7, None), (8, None), (8, None), (9, None),
    ]  # fmt: skip


def test_the_lookback_window_is_inclusive_and_drops_older_rows(platform, history, lookups):
    lookup = FeatureLookup(history, ["key"], timestamp_lookup_key="t", lookback_window=dt.timedelta(hours=1))
    assert dict(_values(_joined(platform, lookups, lookup))) == {
        1: 2.0, 2: 1.0, 3: 2.0, 4: None, 5: 2.0, 6: None, 7: None, 8: None, 9: None,
    }  # fmt: skip
    exact = FeatureLookup(history, ["key"], timestamp_lookup_key="t", lookback_window=dt.timedelta(0))
    assert [v for _, v in _values(_joined(platform, lookups, exact)) if v is not None] == [2.0]


def test_renames_defaults_and_excluded_columns(platform, history, lookups):
    lookup = FeatureLookup(
        history,
        "key",
        timestamp_lookup_key="t",
        feature_names=["v"],
        rename_outputs={"v": "recent_v"},
        default_values={"recent_v": -1.0},
        lookback_window=dt.timedelta(hours=1),
    )
    joined = _joined(platform, lookups, lookup, exclude_columns=["t", "key"])
    assert joined.columns == ["id", "recent_v", "label"]
    assert joined.count() == lookups.count()
    assert dict(_values(joined, "recent_v")) == {
        1: 2.0, 2: 1.0, 3: 2.0, 4: -1.0, 5: 2.0, 6: -1.0, 7: -1.0, 8: -1.0, 9: -1.0,
    }  # fmt: skip


def test_lookup_errors_are_clear(platform, spark, history, lookups):
    store = platform.feature_store
    with pytest.raises(
        MissingTableError, match=r"test.fs_asof.nothing does not exist.*task features of job pipeline"
    ):
        store.create_training_set(
            lookups, [FeatureLookup("test.fs_asof.nothing", "key", timestamp_lookup_key="t")], "label"
        )
    with pytest.raises(FeatureStoreError, match=r"no features \['w'\]; its features are \['v'\]"):
        store.create_training_set(
            lookups, [FeatureLookup(history, "key", timestamp_lookup_key="t", feature_names="w")], "label"
        )
    with pytest.raises(FeatureStoreError, match="needs a timestamp_lookup_key"):
        store.create_training_set(lookups, [FeatureLookup(history, "key")], "label")
    with pytest.raises(FeatureStoreError, match="'key' is bigint but the table's 'key' is int"):
        longs = lookups.withColumn("key", F.col("key").cast("long"))
        store.create_training_set(longs, [FeatureLookup(history, "key", timestamp_lookup_key="t")], "label")
    with pytest.raises(FeatureStoreError, match="label column 'label' cannot be excluded"):
        store.create_training_set(lookups, [], "label", exclude_columns=["label"])
    with pytest.raises(FeatureStoreError, match=r"exclude_columns \['typo'\]"):
        store.create_training_set(lookups, [], "label", exclude_columns=["typo"])


def test_merge_replaces_rows_by_key_and_is_idempotent(platform, spark):
    store, name = platform.feature_store, "test.fs_merge.features"
    first = [(1, T(2016, 1, 4, 10), 1.0), (1, T(2016, 1, 4, 11), 2.0), (2, T(2016, 1, 4, 10), 3.0)]
    store.write_table(name, _features(spark, first), **KEYS)
    store.write_table(name, _features(spark, first), **KEYS)
    assert platform.read_table(name).count() == 3
    store.write_table(
        name, _features(spark, [(1, T(2016, 1, 4, 11), 20.0), (3, T(2016, 1, 4, 10), 4.0)]), **KEYS
    )
    assert sorted(platform.read_table(name).collect()) == [
        (1, T(2016, 1, 4, 10), 1.0), (1, T(2016, 1, 4, 11), 20.0),
        (2, T(2016, 1, 4, 10), 3.0), (3, T(2016, 1, 4, 10), 4.0),
    ]  # fmt: skip
    database = platform.state_dir / "warehouse" / "test__fs_merge.db"
    assert (
        len([path for path in database.iterdir() if path.name.startswith("features")]) == 1
    )  # old data deleted


def test_a_write_that_fails_midway_leaves_the_table_as_it_was(platform, spark):
    store, name = platform.feature_store, "test.fs_failed.features"
    store.write_table(name, _features(spark, [(1, T(2016, 1, 4, 10), 1.0)]), **KEYS)
    database = platform.state_dir / "warehouse" / "test__fs_failed.db"
    before = sorted(path.name for path in database.iterdir())
    # "oops" only fails when cast to the table's double column, while the merged data is written.
    broken = spark.createDataFrame([(2, T(2016, 1, 4, 10), "oops")], "key int, ts timestamp, v string")
    with pytest.raises(Exception, match="oops"):
        store.write_table(name, broken, **KEYS)
    assert platform.read_table(name).collect() == [(1, T(2016, 1, 4, 10), 1.0)]
    assert sorted(path.name for path in database.iterdir()) == before


def test_duplicate_and_null_keys_in_one_write_are_rejected(platform, spark):
    duplicated = _features(spark, [(1, T(2016, 1, 4, 10), 1.0), (1, T(2016, 1, 4, 10), 2.0)])
    with pytest.raises(FeatureStoreError, match=r"must be unique.*'key': 1, 'ts': datetime.*occurs 2 times"):
        platform.feature_store.write_table("test.fs_dup.features", duplicated, **KEYS)
    with pytest.raises(FeatureStoreError, match="may not be null"):
        platform.feature_store.write_table(
            "test.fs_dup.features", _features(spark, [(None, T(2016, 1, 4), 1.0)]), **KEYS
        )
    assert not platform.table_exists("test.fs_dup.features")


def test_keys_are_recorded_in_the_metastore_and_cannot_change(platform, spark):
    name = "test.fs_keys.features"
    platform.feature_store.write_table(name, _features(spark, [(1, T(2016, 1, 4), 1.0)]), **KEYS)
    properties = dict(spark.sql(f"SHOW TBLPROPERTIES {platform.table_name(name)}").collect())
    assert properties[PRIMARY_KEYS_PROPERTY] == '["key", "ts"]'
    assert platform.feature_store.get_table(name).entity_keys == ["key"]
    with pytest.raises(FeatureStoreError, match=r"has primary keys \['key', 'ts'\].*uses \['ts'\]"):
        platform.feature_store.write_table(
            name,
            _features(spark, [(1, T(2016, 1, 4), 1.0)]),
            primary_keys=["ts"],
            timestamp_key="ts",
            description="",
        )


def test_the_timestamp_key_must_be_a_primary_key_and_tables_must_be_feature_tables(platform, spark):
    df = _features(spark, [(1, T(2016, 1, 4), 1.0)])
    with pytest.raises(
        FeatureStoreError, match=r"timestamp key 'ts' must be one of the primary keys \['key'\]"
    ):
        platform.feature_store.write_table(
            "test.fs_bad.features", df, primary_keys=["key"], timestamp_key="ts", description=""
        )
    platform.save_table(df, "test.fs_bad.plain")
    with pytest.raises(FeatureStoreError, match="not a feature table"):
        platform.feature_store.write_table("test.fs_bad.plain", df, **KEYS)


@pytest.fixture(scope="module")
def feature_tables(platform, churn_schema):
    """The features task's config over the session's churn tables, with `$MLOPS_PROBLEM` set to churn."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROBLEM_VARIABLE, "churn_example.spec:PROBLEM")
        yield build_config(FeaturesConfig, [f"--schema={churn_schema}", "--start=", "--end="])


def test_the_features_task_writes_the_spec_tables_and_reruns_idempotently(platform, feature_tables):
    names = CHURN.feature_table_names(feature_tables.schema_).values()
    before = {name: sorted(platform.read_table(name).collect()) for name in names}
    assert all(len(rows) > 0 for rows in before.values())
    again = feature_tables.model_copy(update={"start": T(2024, 1, 10), "end": T(2024, 1, 20)})
    run(platform, again)
    assert {name: sorted(platform.read_table(name).collect()) for name in names} == before


def test_the_task_config_reads_iso_dates_and_checks_the_range():
    common = ["--schema=a.b"]
    config = build_config(FeaturesConfig, [*common, "--start=2016-01-10", "--end=2016-01-20T06:30:00"])
    assert (config.start, config.end) == (T(2016, 1, 10), T(2016, 1, 20, 6, 30))
    with pytest.raises(TaskArgumentError, match="must be before end"):
        build_config(FeaturesConfig, [*common, "--start=2016-01-20", "--end=2016-01-10"])


def test_the_feature_set_for_scoring_needs_no_label(platform, feature_tables):
    schema = feature_tables.schema_
    events = platform.read_table(CHURN.prepared_table_name(schema)).drop(CHURN.label)
    rows = build_feature_set(platform, CHURN, events, schema)
    assert rows.columns[: len(events.columns)] == events.columns
    assert set(CHURN.input_names) <= set(rows.columns)
    assert rows.count() == events.count()


# --- models logged with their lookups: log_model, score_batch; publishing the online copy ------


def _micros(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)


@pytest.fixture(scope="module")
def looked_up_model(platform, spark, history):
    """A linear model of x and the looked-up v (label = x + 2 v, v defaulting to 0), logged with
    its lookup through the local feature store; the key and time are inputs it ignores."""
    platform.configure_mlflow()
    lookup = FeatureLookup(
        history, "key", timestamp_lookup_key="t", feature_names=["v"], default_values={"v": 0.0}
    )
    rows = [(1, T(2016, 1, 4, 10, 30), 1.0), (1, T(2016, 1, 4, 12), 2.0), (2, T(2016, 1, 4, 10), 3.0)]
    rows += [(3, T(2016, 1, 4, 10), 4.0), (1, T(2016, 1, 4, 10), 5.0)]  # v: 2, 3, 5, 0 (no row), 1
    requests = spark.createDataFrame(rows, "key int, t timestamp, x double")
    joined = platform.feature_store.create_training_set(requests, [lookup], label=None).load_df().toPandas()
    joined["label"] = joined["x"] + 2 * joined["v"]
    labelled = spark.createDataFrame(joined.drop(columns="v"), "key int, t timestamp, x double, label double")
    training_set = platform.feature_store.create_training_set(labelled, [lookup], label="label")
    model = Pipeline(
        [("inputs", ColumnTransformer([("used", "passthrough", ["x", "v"])])), ("model", LinearRegression())]
    )
    model.fit(joined[["key", "t", "x", "v"]], joined["label"])
    outputs = Schema([ColSpec("double")])
    with mlflow.start_run(experiment_id=platform.experiment_id("/Shared/test-feature-models")):
        info = platform.feature_store.log_model(
            model=model,
            name="model",
            flavor=mlflow.sklearn,
            training_set=training_set,
            signature=ModelSignature(inputs=Schema([ColSpec("double", "ignored")]), outputs=outputs),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            pip_requirements=["scikit-learn"],
        )
    return {"uri": info.model_uri, "model": model, "lookup": lookup, "outputs": outputs}


def test_a_model_logged_with_lookups_takes_request_inputs_required_and_features_optional(
    looked_up_model,
):
    """fe.log_model's signature of a training set: "Source data columns are required inputs. Feature
    columns (both lookup and on-demand features) are optional inputs", typed from the training set
    (databricks/ml_features/utils/signature_utils.py, get_mlflow_signature_from_feature_spec and
    SUPPORTED_SCALAR_TYPE_MAP: int -> integer, timestamp -> datetime); the outputs are given."""
    model = Model.load(looked_up_model["uri"])
    assert model.signature.inputs == Schema(
        [
            ColSpec("integer", "key", required=True),
            ColSpec("datetime", "t", required=True),
            ColSpec("double", "x", required=True),
            ColSpec("double", "v", required=False),
        ]
    )
    assert model.signature.outputs == looked_up_model["outputs"]
    assert model.metadata[FEATURE_LOOKUPS_METADATA] == [LookupSpec.of(looked_up_model["lookup"]).to_dict()]


def test_only_models_logged_with_lookups_count_as_such(platform, looked_up_model, spark):
    store = platform.feature_store
    assert store.logged_with_lookups(looked_up_model["uri"])
    with mlflow.start_run(experiment_id=platform.experiment_id("/Shared/test-feature-models")):
        plain = mlflow.sklearn.log_model(
            looked_up_model["model"],
            name="plain",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            pip_requirements=["scikit-learn"],
        )
    assert not store.logged_with_lookups(plain.model_uri)
    # fe.log_model takes a TrainingSet of create_training_set (databricks/feature_engineering/client.py
    # log_model reads training_set.feature_spec).
    with pytest.raises(FeatureStoreError, match="needs the training set create_training_set returned"):
        store.log_model(model=None, name="m", flavor=mlflow.sklearn, training_set=spark.range(1))


def _scoring_rows(spark):
    """Rows to score: v as of each time is 2.0, 1.0, 3.0, none (key 3: default 0), 2.0."""
    rows = [
        (1, 1, T(2016, 1, 4, 10, 30), 10.0),
        (2, 1, T(2016, 1, 4, 10, 29, 59), 20.0),
        (3, 1, T(2016, 1, 4, 12), 30.0),
        (4, 3, T(2016, 1, 4, 10), 40.0),
        (5, 1, T(2016, 1, 4, 11, 59), 50.0),
    ]
    return spark.createDataFrame(rows, "id int, key int, t timestamp, x double")


def test_score_batch_looks_features_up_as_of_each_row_and_predicts(platform, spark, looked_up_model):
    """fe.score_batch returns "All columns of df", the feature values retrieved, and a column
    `prediction` (databricks/feature_engineering/client.py, score_batch); the features are the
    point-in-time values create_training_set joins."""
    rows = _scoring_rows(spark)
    scored = platform.feature_store.score_batch(
        model_uri=looked_up_model["uri"], df=rows, result_type="double"
    )
    assert scored.columns == ["id", "key", "t", "x", "v", "prediction"]
    frame = scored.toPandas().sort_values("id")
    assert frame["v"].tolist() == [2.0, 1.0, 3.0, 0.0, 2.0]
    expected_inputs = rows.toPandas().sort_values("id").assign(v=[2.0, 1.0, 3.0, 0.0, 2.0])
    expected = looked_up_model["model"].predict(expected_inputs[["key", "t", "x", "v"]])
    np.testing.assert_allclose(frame["prediction"], expected, rtol=1e-9)
    np.testing.assert_allclose(frame["prediction"], frame["x"] + 2 * frame["v"], rtol=1e-6)


def test_score_batch_uses_a_feature_the_dataframe_already_has(platform, spark, looked_up_model):
    """ "If a feature is included in df, the provided feature values will be used rather than those
    stored in feature tables" (databricks/feature_engineering/client.py, score_batch)."""
    rows = _scoring_rows(spark).withColumn("v", F.lit(100.0))
    scored = platform.feature_store.score_batch(
        model_uri=looked_up_model["uri"], df=rows, result_type="double"
    )
    assert scored.columns == ["id", "key", "t", "x", "v", "prediction"]
    frame = scored.toPandas()
    assert set(frame["v"]) == {100.0}
    np.testing.assert_allclose(frame["prediction"], frame["x"] + 200.0, rtol=1e-6)


def test_score_batch_refuses_rows_without_the_lookup_keys_or_with_a_prediction(
    platform, spark, looked_up_model
):
    """fe.score_batch: df must contain the lookup keys and source columns ("DataFrame is missing
    required columns") and no column `prediction`
    (databricks/ml_features/_training_scoring_client/_training_scoring_client.py, score_batch)."""
    store, uri = platform.feature_store, looked_up_model["uri"]
    with pytest.raises(FeatureStoreError, match=r"lacks the columns \['key'\]"):
        store.score_batch(model_uri=uri, df=_scoring_rows(spark).drop("key"), result_type="double")
    with pytest.raises(FeatureStoreError, match="already has one"):
        rows = _scoring_rows(spark).withColumn("prediction", F.lit(0.0))
        store.score_batch(model_uri=uri, df=rows, result_type="double")


def test_publish_writes_the_latest_row_per_key_and_republishes(platform, spark):
    """An online table keeps one row per primary key, the newest by the timestamp key
    (databricks/sdk/service/database.py, SyncedTableSpec.timeseries_key: "Time series key to
    deduplicate (tie-break) rows with the same primary key"); a publish merges the table's
    current rows in (databricks/feature_engineering/client.py, publish_table)."""
    store, name = platform.feature_store, "test.fs_publish.features"
    rows = [(1, T(2016, 1, 4, 10), 1.0), (1, T(2016, 1, 4, 12), 3.0), (1, T(2016, 1, 4, 11), 2.0)]
    store.write_table(name, _features(spark, [*rows, (2, T(2016, 1, 4, 9), None)]), **KEYS)
    store.publish_table(source_table_name=name, online_store="test-store")
    table = OnlineTable.open(platform.state_dir, name)
    assert (table.entity_keys, table.timestamp_key, table.feature_columns) == (("key",), "ts", ("v",))
    assert table.lookup([(1,), (2,), (3,)]) == [
        (_micros(T(2016, 1, 4, 12)), (3.0,)),
        (_micros(T(2016, 1, 4, 9)), (None,)),
        (None, None),
    ]
    store.write_table(name, _features(spark, [(2, T(2016, 1, 4, 13), 7.0)]), **KEYS)
    store.publish_table(source_table_name=name, online_store="test-store")
    assert table.reload_if_changed()
    assert table.lookup([(2,)]) == [(_micros(T(2016, 1, 4, 13)), (7.0,))]


def test_publishing_a_missing_table_says_to_run_the_feature_job(platform):
    with pytest.raises(
        MissingTableError, match="test.fs_publish.nothing does not exist.*task features of job"
    ):
        platform.feature_store.publish_table(source_table_name="test.fs_publish.nothing", online_store="s")


def test_the_publish_task_publishes_every_feature_table_of_the_spec(platform, feature_tables, caplog):
    """Each feature table of the spec gets a snapshot; serving_features=request publishes nothing."""
    names = list(CHURN.feature_table_names(feature_tables.schema_).values())
    for name in names:
        snapshot_path(platform.state_dir, name).unlink(missing_ok=True)
    arguments = [f"--schema={feature_tables.schema_}", "--online-store=test-store"]
    with caplog.at_level("INFO", logger="mlops_template.tasks.publish_features"):
        publish_features.run(
            platform,
            build_config(publish_features.PublishFeaturesConfig, [*arguments, "--serving-features=request"]),
        )
    assert "nothing to publish" in caplog.text
    assert not any(snapshot_path(platform.state_dir, name).exists() for name in names)
    publish_features.run(platform, build_config(publish_features.PublishFeaturesConfig, arguments))
    for name in names:
        table = OnlineTable.open(platform.state_dir, name)
        keys = platform.read_table(name).select(*table.entity_keys).distinct().count()
        assert len(table) == keys > 0
