"""Inputs derived from each trip: time of day, weekday and the point-in-time lookup times."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mlops_template.features.columns import DROPOFF_LOOKUP_TIME, PICKUP_LOOKUP_TIME

PICKUP_ROUNDING_MINUTES = 15
DROPOFF_ROUNDING_MINUTES = 30


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
