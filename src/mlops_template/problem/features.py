"""The taxi features: the pickup and dropoff feature tables and their point-in-time lookups.

A client asking for a fare sends what an application knows (REQUEST_COLUMNS): the zips, the
pickup and drop-off times and the distance. Everything else is looked up by zip and time from the
feature tables (online at serving time, point-in-time in training and batch scoring), and the model
derives the pickup hour and weekday itself (problem/trip_time.py).

Feature tables: pure Spark transforms over trips.

Each feature row sums up the trips of one zip in one time window. It is keyed by `zip` and by
`ts`, the window END: Spark windows are [start, end), so a row at `ts` only uses trips strictly
before `ts`. Trips look features up at their pickup (dropoff) time: the latest row at or before
it describes a window that ended before the trip, never one containing it or any later trip.

Pickup features (per pickup zip, 1-hour window sliding every 15 minutes):

- `mean_fare_window_1h_pickup_zip`: mean fare of the trips picked up in the zip in the hour
  before `ts`. Fares depend on where trips start (airport flat fares, long outer-borough rides)
  and on the time of day; the recent local mean is a strong prior for the next fare.
- `count_trips_window_1h_pickup_zip`: how many trips were picked up there in that hour. Demand
  goes with congestion (slower trips, more per-minute fare) and with dense areas (short trips).

Dropoff features (per dropoff zip, 30-minute tumbling window):

- `count_trips_window_30m_dropoff_zip`: trips that ended in the zip in the 30 minutes before
  `ts`: how busy, hence how congested, the destination is.
- `dropoff_is_weekend`: 1.0 when `ts` falls on a Saturday or Sunday (session time zone), else 0.0
  (a double: a lookup that finds no row leaves it null, which an integer input cannot hold).
  Weekend traffic is faster and has no weekday rush-hour surcharge.

`start` / `end` select the feature rows to compute: those with `start <= ts < end`. Trips are
read from one window length before `start`, so every row is computed from its whole window and
runs over adjacent ranges produce disjoint, complete rows (merging them loses nothing).

Lookback windows: the rows sit on a time grid (every 15 minutes for pickup, 30 for dropoff). A
trip looks up the row that ended at the last grid time before it, or, when that window had no
trips, the one a grid step earlier, which still overlaps or borders the window before the trip:
lookback = window + grid step - 1 second (whole seconds, as Databricks counts them). Older rows
describe an unrelated earlier period; a stale count or mean is worse than the lookup's default:
0 trips for the counts, null (the model's "unknown") for the mean fare and the weekend flag.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pandas as pd
from databricks.feature_engineering import FeatureLookup
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mlops_template.problem_spec import FeatureTable

LABEL = "fare_amount"

# What a client sends for one trip (the request inputs): the lookup keys and times, the distance.
PICKUP_TIME, DROPOFF_TIME = "tpep_pickup_datetime", "tpep_dropoff_datetime"
REQUEST_COLUMNS = ["trip_distance", "pickup_zip", "dropoff_zip", PICKUP_TIME, DROPOFF_TIME]

# Feature tables: keys and features.
FEATURE_KEY = "zip"
FEATURE_TIMESTAMP = "ts"
PICKUP_FEATURES = ["mean_fare_window_1h_pickup_zip", "count_trips_window_1h_pickup_zip"]
DROPOFF_FEATURES = ["count_trips_window_30m_dropoff_zip", "dropoff_is_weekend"]

MODEL_INPUT_COLUMNS = REQUEST_COLUMNS + PICKUP_FEATURES + DROPOFF_FEATURES

PICKUP_TABLE, DROPOFF_TABLE = "pickup_features", "dropoff_features"

MEAN_FARE_PICKUP, COUNT_TRIPS_PICKUP = PICKUP_FEATURES
COUNT_TRIPS_DROPOFF, DROPOFF_IS_WEEKEND = DROPOFF_FEATURES

PICKUP_WINDOW = dt.timedelta(hours=1)
PICKUP_SLIDE = dt.timedelta(minutes=15)
DROPOFF_WINDOW = dt.timedelta(minutes=30)


def _interval(length: dt.timedelta) -> str:
    return f"{int(length.total_seconds())} seconds"


def _timestamp(value: dt.datetime) -> Column:
    """A timestamp literal read in the Spark session time zone (as the trips' timestamps are)."""
    return F.lit(value.isoformat(sep=" ")).cast("timestamp")


def _trips_for_windows(
    trips: DataFrame,
    zip_column: str,
    time_column: str,
    window: dt.timedelta,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> DataFrame:
    """The trips every window ending in [start, end) needs, with a zip and a time."""
    trips = trips.where(F.col(zip_column).isNotNull() & F.col(time_column).isNotNull())
    if start is not None:
        trips = trips.where(F.col(time_column) >= _timestamp(start - window))
    if end is not None:
        trips = trips.where(F.col(time_column) < _timestamp(end))
    return trips


def _rows_in_range(features: DataFrame, start: dt.datetime | None, end: dt.datetime | None) -> DataFrame:
    if start is not None:
        features = features.where(F.col(FEATURE_TIMESTAMP) >= _timestamp(start))
    if end is not None:
        features = features.where(F.col(FEATURE_TIMESTAMP) < _timestamp(end))
    return features


def pickup_features(
    trips: DataFrame, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> DataFrame:
    """Per pickup zip and 1-hour window (every 15 minutes): mean fare and trip count."""
    selected = _trips_for_windows(trips, "pickup_zip", "tpep_pickup_datetime", PICKUP_WINDOW, start, end)
    window = F.window("tpep_pickup_datetime", _interval(PICKUP_WINDOW), _interval(PICKUP_SLIDE))
    features = (
        selected.groupBy(F.col("pickup_zip").cast("bigint").alias(FEATURE_KEY), window.alias("window"))
        .agg(
            F.mean(LABEL).alias(MEAN_FARE_PICKUP),
            F.count(F.lit(1)).alias(COUNT_TRIPS_PICKUP),
        )
        .select(FEATURE_KEY, F.col("window.end").alias(FEATURE_TIMESTAMP), *PICKUP_FEATURES)
    )
    return _rows_in_range(features, start, end)


def dropoff_features(
    trips: DataFrame, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> DataFrame:
    """Per dropoff zip and 30-minute tumbling window: trip count and weekend flag."""
    selected = _trips_for_windows(trips, "dropoff_zip", "tpep_dropoff_datetime", DROPOFF_WINDOW, start, end)
    window = F.window("tpep_dropoff_datetime", _interval(DROPOFF_WINDOW))
    features = (
        selected.groupBy(F.col("dropoff_zip").cast("bigint").alias(FEATURE_KEY), window.alias("window"))
        .agg(F.count(F.lit(1)).alias(COUNT_TRIPS_DROPOFF))
        .select(
            FEATURE_KEY,
            F.col("window.end").alias(FEATURE_TIMESTAMP),
            COUNT_TRIPS_DROPOFF,
            F.dayofweek("window.end").isin(1, 7).cast("double").alias(DROPOFF_IS_WEEKEND),
        )
    )
    return _rows_in_range(features, start, end)


_SECOND = dt.timedelta(seconds=1)
PICKUP_LOOKBACK: dt.timedelta = PICKUP_WINDOW + PICKUP_SLIDE - _SECOND
DROPOFF_LOOKBACK: dt.timedelta = 2 * DROPOFF_WINDOW - _SECOND

FEATURE_TABLES = (
    FeatureTable(
        name=PICKUP_TABLE,
        primary_keys=(FEATURE_KEY, FEATURE_TIMESTAMP),
        timestamp_key=FEATURE_TIMESTAMP,
        description="Taxi pickups per zip over 1-hour windows every 15 minutes (ts = window end).",
        compute=pickup_features,
    ),
    FeatureTable(
        name=DROPOFF_TABLE,
        primary_keys=(FEATURE_KEY, FEATURE_TIMESTAMP),
        timestamp_key=FEATURE_TIMESTAMP,
        description="Taxi dropoffs per zip over 30-minute windows (ts = window end).",
        compute=dropoff_features,
    ),
)


def feature_lookups(tables: Mapping[str, str]) -> list[FeatureLookup]:
    """Pickup features by pickup zip and dropoff features by dropoff zip, as of each trip.

    `tables` maps each feature table's `name` to its full name.
    """
    return [
        FeatureLookup(
            table_name=tables[PICKUP_TABLE],
            lookup_key=["pickup_zip"],
            timestamp_lookup_key=PICKUP_TIME,
            feature_names=PICKUP_FEATURES,
            default_values={COUNT_TRIPS_PICKUP: 0},
            lookback_window=PICKUP_LOOKBACK,
        ),
        FeatureLookup(
            table_name=tables[DROPOFF_TABLE],
            lookup_key=["dropoff_zip"],
            timestamp_lookup_key=DROPOFF_TIME,
            feature_names=DROPOFF_FEATURES,
            default_values={COUNT_TRIPS_DROPOFF: 0},
            lookback_window=DROPOFF_LOOKBACK,
        ),
    ]


def drifted(trips: pd.DataFrame) -> pd.DataFrame:
    """The same trips as a changed city would send them: twice as long, all in the evening (the
    pickup moved to 16:00-23:59 of its day, the drop-off with it)."""
    shifted = trips.copy()
    shifted["trip_distance"] = 2 * shifted["trip_distance"]
    pickup = pd.to_datetime(shifted[PICKUP_TIME])
    evening = (
        pickup.dt.normalize()
        + pd.to_timedelta(16 + pickup.dt.hour % 8, unit="h")
        + (pickup - pickup.dt.floor("h"))
    )
    shifted[DROPOFF_TIME] = pd.to_datetime(shifted[DROPOFF_TIME]) + (evening - pickup)
    shifted[PICKUP_TIME] = evening
    return shifted
