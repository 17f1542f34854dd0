"""The taxi features: inputs derived from each trip, the pickup and dropoff feature tables, and
their point-in-time lookups.

Trip inputs: `pickup_hour` (0-23), `pickup_weekday` (1 = Sunday .. 7), and the two lookup times
(the pickup / dropoff time floored to 15 / 30 minutes), which only the lookups use.

Feature tables: pure Spark transforms over trips.

Each feature row sums up the trips of one zip in one time window. It is keyed by `zip` and by
`ts`, the window END: Spark windows are [start, end), so a row at `ts` only uses trips strictly
before `ts`. Trips look features up at their pickup (dropoff) time floored to 15 (30) minutes
(add_trip_inputs), so a trip never sees a window that contains itself or any later trip.

Pickup features (per pickup zip, 1-hour window sliding every 15 minutes):

- `mean_fare_window_1h_pickup_zip`: mean fare of the trips picked up in the zip in the hour
  before `ts`. Fares depend on where trips start (airport flat fares, long outer-borough rides)
  and on the time of day; the recent local mean is a strong prior for the next fare.
- `count_trips_window_1h_pickup_zip`: how many trips were picked up there in that hour. Demand
  goes with congestion (slower trips, more per-minute fare) and with dense areas (short trips).

Dropoff features (per dropoff zip, 30-minute tumbling window):

- `count_trips_window_30m_dropoff_zip`: trips that ended in the zip in the 30 minutes before
  `ts`: how busy, hence how congested, the destination is.
- `dropoff_is_weekend`: 1 when `ts` falls on a Saturday or Sunday (session time zone), else 0.
  Weekend traffic is faster and has no weekday rush-hour surcharge. `ts` is the day of the
  trips that look this row up (their dropoff floored to 30 minutes).

`start` / `end` select the feature rows to compute: those with `start <= ts < end`. Trips are
read from one window length before `start`, so every row is computed from its whole window and
runs over adjacent ranges produce disjoint, complete rows (merging them loses nothing).

Lookback windows: one window length of each feature table (1 hour for pickup, 30 minutes for
dropoff). A trip's lookup time sits on the tables' time grid, so the row at exactly that time
describes the window just before the trip; it is missing only when that window had no trips.
An older row then still overlaps or borders that window within one window length, but beyond it
the row describes an unrelated earlier period, and a stale count or mean is worse than a null
the model can treat as "no recent trips".
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

# Inputs taken from the trip itself (derived in Spark by add_trip_inputs).
TRIP_INPUT_COLUMNS = ["trip_distance", "pickup_zip", "dropoff_zip", "pickup_hour", "pickup_weekday"]

# Feature tables: keys and features.
FEATURE_KEY = "zip"
FEATURE_TIMESTAMP = "ts"
PICKUP_FEATURES = ["mean_fare_window_1h_pickup_zip", "count_trips_window_1h_pickup_zip"]
DROPOFF_FEATURES = ["count_trips_window_30m_dropoff_zip", "dropoff_is_weekend"]

# Point-in-time lookup keys added to trips (add_trip_inputs).
PICKUP_LOOKUP_TIME = "rounded_pickup_datetime"
DROPOFF_LOOKUP_TIME = "rounded_dropoff_datetime"

MODEL_INPUT_COLUMNS = TRIP_INPUT_COLUMNS + PICKUP_FEATURES + DROPOFF_FEATURES

PICKUP_TABLE, DROPOFF_TABLE = "pickup_features", "dropoff_features"
PICKUP_ROUNDING_MINUTES = 15
DROPOFF_ROUNDING_MINUTES = 30

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
        selected.groupBy(F.col("pickup_zip").cast("int").alias(FEATURE_KEY), window.alias("window"))
        .agg(
            F.mean(LABEL).alias(MEAN_FARE_PICKUP),
            F.count(F.lit(1)).cast("int").alias(COUNT_TRIPS_PICKUP),
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
        selected.groupBy(F.col("dropoff_zip").cast("int").alias(FEATURE_KEY), window.alias("window"))
        .agg(F.count(F.lit(1)).cast("int").alias(COUNT_TRIPS_DROPOFF))
        .select(
            FEATURE_KEY,
            F.col("window.end").alias(FEATURE_TIMESTAMP),
            COUNT_TRIPS_DROPOFF,
            F.dayofweek("window.end").isin(1, 7).cast("int").alias(DROPOFF_IS_WEEKEND),
        )
    )
    return _rows_in_range(features, start, end)


PICKUP_LOOKBACK: dt.timedelta = PICKUP_WINDOW
DROPOFF_LOOKBACK: dt.timedelta = DROPOFF_WINDOW

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


def floor_to_minutes(column: str, minutes: int) -> Column:
    """`column` floored to a multiple of `minutes`, aligned on the epoch like Spark's `window()`.

    Flooring (never rounding up) matters: a trip at 10:07 looks features up at 10:00, whose
    windows end at 10:00 and so hold only trips before it, never the trip itself.
    """
    micros = F.unix_micros(F.col(column))
    return F.timestamp_micros(micros - F.pmod(micros, F.lit(minutes * 60 * 1_000_000)))


def add_trip_inputs(trips: DataFrame) -> DataFrame:
    """Add `pickup_hour` (0-23), `pickup_weekday` (1 = Sunday .. 7) and the two lookup times."""
    return (
        trips.withColumn("pickup_hour", F.hour("tpep_pickup_datetime"))
        .withColumn("pickup_weekday", F.dayofweek("tpep_pickup_datetime"))
        .withColumn(PICKUP_LOOKUP_TIME, floor_to_minutes("tpep_pickup_datetime", PICKUP_ROUNDING_MINUTES))
        .withColumn(DROPOFF_LOOKUP_TIME, floor_to_minutes("tpep_dropoff_datetime", DROPOFF_ROUNDING_MINUTES))
    )


def feature_lookups(tables: Mapping[str, str]) -> list[FeatureLookup]:
    """Pickup features by pickup zip and dropoff features by dropoff zip, as of each trip.

    `tables` maps each feature table's `name` to its full name.
    """
    return [
        FeatureLookup(
            table_name=tables[PICKUP_TABLE],
            lookup_key=["pickup_zip"],
            timestamp_lookup_key=PICKUP_LOOKUP_TIME,
            feature_names=PICKUP_FEATURES,
            lookback_window=PICKUP_LOOKBACK,
        ),
        FeatureLookup(
            table_name=tables[DROPOFF_TABLE],
            lookup_key=["dropoff_zip"],
            timestamp_lookup_key=DROPOFF_LOOKUP_TIME,
            feature_names=DROPOFF_FEATURES,
            lookback_window=DROPOFF_LOOKBACK,
        ),
    ]


def drifted(trips: pd.DataFrame) -> pd.DataFrame:
    """The same trips as a changed city would send them: twice as long, all in the evening."""
    shifted = trips.copy()
    shifted["trip_distance"] = 2 * shifted["trip_distance"]
    shifted["pickup_hour"] = 16 + shifted["pickup_hour"] % 8
    return shifted
