"""Pure Spark transforms: trips -> the pickup and dropoff feature tables.

Each feature row sums up the trips of one zip in one time window. It is keyed by `zip` and by
`ts`, the window END: Spark windows are [start, end), so a row at `ts` only uses trips strictly
before `ts`. Trips look features up at their pickup (dropoff) time floored to 15 (30) minutes
(features.trips), so a trip never sees a window that contains itself or any later trip.

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
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mlops_template.features.columns import (
    DROPOFF_FEATURES,
    FEATURE_KEY,
    FEATURE_TIMESTAMP,
    LABEL,
    PICKUP_FEATURES,
)

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
