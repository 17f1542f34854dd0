"""Trip inputs and the pickup / dropoff feature transforms on small hand-built trips."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from mlops_template.problem.features import (
    DROPOFF_FEATURES,
    DROPOFF_LOOKUP_TIME,
    PICKUP_FEATURES,
    PICKUP_LOOKUP_TIME,
    add_trip_inputs,
    dropoff_features,
    pickup_features,
)

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


def test_trip_inputs_floor_the_lookup_times(spark):
    trips = _trips(spark, [(T(2016, 1, 3, 23, 59, 59), T(2016, 1, 4, 0, 30), 9.0, 10001, 10002)])
    row = add_trip_inputs(trips).collect()[0]
    assert (row["pickup_hour"], row["pickup_weekday"]) == (23, 1)  # 2016-01-03 is a Sunday
    assert row[PICKUP_LOOKUP_TIME] == T(2016, 1, 3, 23, 45)
    assert row[DROPOFF_LOOKUP_TIME] == T(2016, 1, 4, 0, 30)
    early = add_trip_inputs(
        _trips(spark, [(T(2016, 1, 4, 10, 14, 59), T(2016, 1, 4, 10, 29, 59), 9.0, 1, 2)])
    )
    assert early.select(PICKUP_LOOKUP_TIME, DROPOFF_LOOKUP_TIME).first() == (
        T(2016, 1, 4, 10),
        T(2016, 1, 4, 10),
    )


def test_pickup_features_are_hourly_means_and_counts_every_quarter_hour(pickups):
    features = pickup_features(pickups)
    assert features.columns == ["zip", "ts", *PICKUP_FEATURES]
    assert [f.dataType.simpleString() for f in features.schema] == ["int", "timestamp", "double", "int"]
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
