"""The trips schema shared by `samples.nyctaxi.trips` and the local generator."""

from __future__ import annotations

from pyspark.sql import types as T

TRIPS_SCHEMA = T.StructType(
    [
        T.StructField("tpep_pickup_datetime", T.TimestampType()),
        T.StructField("tpep_dropoff_datetime", T.TimestampType()),
        T.StructField("trip_distance", T.DoubleType()),
        T.StructField("fare_amount", T.DoubleType()),
        T.StructField("pickup_zip", T.IntegerType()),
        T.StructField("dropoff_zip", T.IntegerType()),
    ]
)
