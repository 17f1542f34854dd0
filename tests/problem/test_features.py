"""Trip inputs and the pickup / dropoff feature transforms on small hand-built trips."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import functions as F

from mlops_template.problem.features import (
    DROPOFF_FEATURES,
    PICKUP_FEATURES,
    dropoff_features,
    pickup_features,
)
from mlops_template.problem.trip_time import TripInputs

T = dt.datetime  # the session time zone is UTC, so naive datetimes read as they print


def _trips(spark, rows):
    """Trips from (pickup, dropoff, fare, pickup_zip, dropoff_zip) tuples."""
    return spark.createDataFrame(
        [
            (pickup, dropoff, 1.0, fare, pickup_zip, dropoff_zip)
            for pickup, dropoff, fare, pickup_zip, dropoff_zip in rows
        ],
        "tpep_pickup_datetime timestamp, tpep_dropoff_datetime timestamp, trip_distance double, "
        "fare_amount double, pickup_zip int, dropoff_zip int",
    )


def _by_ts(features, zip_code):
    rows = features.where(F.col("zip") == zip_code).orderBy("ts").collect()
    return {row["ts"]: tuple(row[name] for name in features.columns[2:]) for row in rows}


@pytest.fixture(scope="module")
def pickups(spark):
    """Zip 10001: trips at 10:05 ($10), 10:20 ($20), 11:10 ($30); zip 10002: one at exactly 10:15."""
    return _trips(
        spark,
        [
            (T(2016, 1, 4, 10, 5), T(2016, 1, 4, 10, 20), 10.0, 10001, 10010),
            (T(2016, 1, 4, 10, 20), T(2016, 1, 4, 10, 40), 20.0, 10001, 10010),
            (T(2016, 1, 4, 11, 10), T(2016, 1, 4, 11, 30), 30.0, 10001, 10010),
            (T(2016, 1, 4, 10, 15), T(2016, 1, 4, 10, 30), 8.0, 10002, 10010),
        ],
    )


def test_the_model_derives_the_pickup_hour_and_weekday_like_spark():
    """The hour and weekday the model computes from a request's pickup time are Spark's `hour` and
    `dayofweek` (1 = Sunday) in the UTC session time zone, aware timestamps converted to UTC."""
    frame = pd.DataFrame(
        {
            "trip_distance": [1.5, 2.0, 3.0],
            "tpep_pickup_datetime": pd.to_datetime(
                ["2016-01-03 23:59:59", "2016-01-04 00:00:00", "2016-01-09 10:30:00"]
            ),
        }
    )
    derived = TripInputs(numeric=("trip_distance",), pickup_time="tpep_pickup_datetime").transform(frame)
    assert derived.columns.tolist() == ["trip_distance", "pickup_hour", "pickup_weekday"]
    assert derived[["pickup_hour", "pickup_weekday"]].values.tolist() == [[23, 1], [0, 2], [10, 7]]
    aware = frame.assign(tpep_pickup_datetime=pd.to_datetime(["2016-01-04T01:00:00+02:00"] * 3))
    assert (
        TripInputs(numeric=(), pickup_time="tpep_pickup_datetime").transform(aware)["pickup_hour"].tolist()
        == [23.0] * 3
    )


def test_spark_and_the_model_agree_on_hour_and_weekday(spark):
    """Training data reaches the model through Spark's toPandas: same hours and weekdays as Spark's."""
    trips = _trips(spark, [(T(2016, 1, 3, 23, 59, 59), T(2016, 1, 4, 0, 30), 9.0, 10001, 10002)])
    expected = trips.select(F.hour("tpep_pickup_datetime"), F.dayofweek("tpep_pickup_datetime")).first()
    derived = TripInputs(numeric=(), pickup_time="tpep_pickup_datetime").transform(trips.toPandas())
    assert tuple(derived.iloc[0]) == tuple(float(value) for value in expected)


def test_pickup_features_are_hourly_means_and_counts_every_quarter_hour(pickups):
    features = pickup_features(pickups)
    assert features.columns == ["zip", "ts", *PICKUP_FEATURES]
    assert [f.dataType.simpleString() for f in features.schema] == ["bigint", "timestamp", "double", "bigint"]
    assert _by_ts(features, 10001) == {
        T(2016, 1, 4, 10, 15): (10.0, 1),
        T(2016, 1, 4, 10, 30): (15.0, 2),
        T(2016, 1, 4, 10, 45): (15.0, 2),
        T(2016, 1, 4, 11, 0): (15.0, 2),
        T(2016, 1, 4, 11, 15): (25.0, 2),
        T(2016, 1, 4, 11, 30): (30.0, 1),
        T(2016, 1, 4, 11, 45): (30.0, 1),
        T(2016, 1, 4, 12, 0): (30.0, 1),
    }


def test_the_window_end_is_the_timestamp_so_a_row_only_uses_earlier_trips(pickups):
    # The trip at exactly 10:15 is in the windows ending 10:30 .. 11:15, not in the one ending 10:15.
    assert sorted(_by_ts(pickup_features(pickups), 10002)) == [
        T(2016, 1, 4, 10, 30),
        T(2016, 1, 4, 10, 45),
        T(2016, 1, 4, 11, 0),
        T(2016, 1, 4, 11, 15),
    ]


def test_dropoff_features_count_half_hours_and_flag_weekends(spark):
    trips = _trips(
        spark,
        [
            (T(2016, 1, 1, 9, 50), T(2016, 1, 1, 10, 5), 9.0, 10001, 10002),  # Friday
            (T(2016, 1, 1, 10, 0), T(2016, 1, 1, 10, 29, 59), 9.0, 10001, 10002),
            (T(2016, 1, 1, 10, 10), T(2016, 1, 1, 10, 30), 9.0, 10001, 10002),
            (T(2016, 1, 1, 23, 20), T(2016, 1, 1, 23, 40), 9.0, 10001, 10002),  # window ends Saturday 00:00
            (T(2016, 1, 3, 12, 0), T(2016, 1, 3, 12, 10), 9.0, 10001, 10002),  # Sunday
        ],
    )
    features = dropoff_features(trips)
    assert features.columns == ["zip", "ts", *DROPOFF_FEATURES]
    assert _by_ts(features, 10002) == {
        T(2016, 1, 1, 10, 30): (2, 0),
        T(2016, 1, 1, 11, 0): (1, 0),
        T(2016, 1, 2, 0, 0): (1, 1),
        T(2016, 1, 3, 12, 30): (1, 1),
    }


def test_start_and_end_select_complete_windows_ending_in_the_range(pickups):
    everything = pickup_features(pickups)
    start, end = T(2016, 1, 4, 10, 30), T(2016, 1, 4, 11, 30)
    ranged = pickup_features(pickups, start, end)
    # The window ending 10:30 still counts the 10:05 trip from before `start`: rows are complete.
    expected = everything.where((F.col("ts") >= start) & (F.col("ts") < end))
    assert sorted(ranged.collect()) == sorted(expected.collect())
    assert ranged.count() == 8  # both zips at 10:30, 10:45, 11:00 and 11:15
    assert sorted(pickup_features(pickups, end=start).select("ts").distinct().collect()) == [
        (T(2016, 1, 4, 10, 15),)
    ]


def test_dropoff_start_and_end_filter_by_dropoff_time(pickups):
    # Dropoffs at 10:20 | 10:30, 10:40 | 11:30 fall in the windows ending 10:30 | 11:00 | 12:00.
    assert _by_ts(dropoff_features(pickups), 10010) == {
        T(2016, 1, 4, 10, 30): (1, 0),
        T(2016, 1, 4, 11, 0): (2, 0),
        T(2016, 1, 4, 12, 0): (1, 0),
    }
    assert _by_ts(dropoff_features(pickups, T(2016, 1, 4, 11), T(2016, 1, 4, 12)), 10010) == {
        T(2016, 1, 4, 11, 0): (2, 0)
    }
