"""The taxi example's feature tables through the features task and the local feature store:
both tables written and rewritten idempotently, each trip's features as of its lookup time, never
a later feature row."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from databricks.feature_engineering import FeatureLookup
from pyspark.sql import functions as F

from mlops_template.problem.data import clean_trips, generate_trips
from mlops_template.problem.features import (
    LABEL,
    MODEL_INPUT_COLUMNS,
    PICKUP_FEATURES,
    PICKUP_LOOKBACK,
    PICKUP_TIME,
    pickup_features,
)
from mlops_template.problem.spec import PROBLEM
from mlops_template.tasks.common import build_config
from mlops_template.tasks.features import FeaturesConfig, run
from mlops_template.training.dataset import build_training_set

T = dt.datetime  # the session time zone is UTC, so naive datetimes read as they print
KEYS = {"primary_keys": ["zip", "ts"], "timestamp_key": "ts", "description": "test features"}


@pytest.fixture(scope="module")
def feature_tables(platform, spark):
    """Generated trips as the prepared table and the features task run over them."""
    platform.save_table(clean_trips(generate_trips(spark, rows=3_000, seed=11)), "test.fs_e2e.trips_clean")
    config = build_config(FeaturesConfig, ["--schema=test.fs_e2e", "--start=", "--end="])
    run(platform, config)
    return config


def test_the_features_task_writes_both_tables_and_reruns_idempotently(platform, feature_tables):
    counts = {
        name: platform.read_table(name).count()
        for name in ("test.fs_e2e.pickup_features", "test.fs_e2e.dropoff_features")
    }
    assert all(count > 0 for count in counts.values())
    again = feature_tables.model_copy(update={"start": T(2016, 1, 10), "end": T(2016, 1, 20)})
    run(platform, again)
    assert {name: platform.read_table(name).count() for name in counts} == counts


def test_the_training_set_joins_features_as_of_each_trip(platform, feature_tables):
    trips = platform.read_table("test.fs_e2e.trips_clean")
    training = build_training_set(platform, PROBLEM, trips, "test.fs_e2e")
    assert {*MODEL_INPUT_COLUMNS, LABEL} <= set(training.columns)
    assert training.columns[-1] == LABEL
    pdf = training.toPandas()
    assert len(pdf) == trips.count() > 2_500
    # Recompute each trip's pickup window from the trips strictly before its lookup time.
    by_zip = dict(iter(trips.toPandas().groupby("pickup_zip")))
    expected = []
    for _, row in pdf.iterrows():
        zone, lookup_time = by_zip[row.pickup_zip], row.tpep_pickup_datetime.floor("15min")
        in_window = (zone.tpep_pickup_datetime >= lookup_time - pd.Timedelta(hours=1)) & (
            zone.tpep_pickup_datetime < lookup_time
        )
        expected.append(zone[in_window].fare_amount)
    has_window = [len(fares) > 0 for fares in expected]
    assert sum(has_window) > 100
    mean_fare, count = PICKUP_FEATURES
    for (_, row), fares in zip(pdf.iterrows(), expected, strict=True):
        if len(fares):
            assert row[count] == len(fares) and row[mean_fare] == pytest.approx(fares.mean())
    # A zip without trips in the hour before gets the lookup's default count, 0, never null.
    assert pdf[count].notna().all() and (pdf[count] == 0).sum() > 0


def test_no_joined_feature_row_is_later_than_the_lookup_time(platform, feature_tables):
    trips = platform.read_table("test.fs_e2e.trips_clean")
    with_ts = pickup_features(platform.read_table("test.fs_e2e.trips_clean")).withColumn(
        "window_end", F.col("ts")
    )
    platform.feature_store.write_table("test.fs_e2e.pickup_with_ts", with_ts, **KEYS)
    lookup = FeatureLookup(
        "test.fs_e2e.pickup_with_ts",
        ["pickup_zip"],
        timestamp_lookup_key=PICKUP_TIME,
        feature_names=["window_end"],
        lookback_window=PICKUP_LOOKBACK,
    )
    joined = platform.feature_store.create_training_set(trips, [lookup], label=LABEL).load_df()
    assert joined.count() == trips.count()
    matched = joined.where(F.col("window_end").isNotNull())
    assert matched.count() > 100
    assert matched.where(F.col("window_end") > F.col(PICKUP_TIME)).count() == 0
    # The lookback reaches the row a grid step before the last window's end, never further.
    oldest = F.col(PICKUP_TIME) - F.expr("INTERVAL 1 HOUR 15 MINUTES")
    assert matched.where(F.col("window_end") <= oldest).count() == 0


def test_without_an_end_the_features_task_writes_only_windows_that_have_ended(platform, spark):
    """The online store serves the latest row per zip: a window still open when the task runs
    (it counts only part of its trips) must not be written, so `end` defaults to now."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    trips = spark.createDataFrame(
        [
            (
                now - dt.timedelta(minutes=minutes),
                now - dt.timedelta(minutes=minutes - 2),
                1.0,
                10.0,
                10001,
                10002,
            )
            for minutes in (50, 20, 5)
        ],
        "tpep_pickup_datetime timestamp, tpep_dropoff_datetime timestamp, trip_distance double, "
        "fare_amount double, pickup_zip int, dropoff_zip int",
    )
    platform.save_table(clean_trips(trips), "test.fs_now.trips_clean")
    run(platform, build_config(FeaturesConfig, ["--schema=test.fs_now", "--start=", "--end="]))
    for table in ("pickup_features", "dropoff_features"):
        ends = platform.read_table(f"test.fs_now.{table}").select("ts").toPandas()["ts"]
        assert len(ends) > 0 and ends.max() <= pd.Timestamp(now), table
