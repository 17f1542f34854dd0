"""The taxi trips: the source schema, a seeded generator of sample trips, and their cleaning.

The source is `samples.nyctaxi.trips` (bundle variable `source_table`); locally the laptop
platform generates it with `generate_trips`, NYC-taxi-like trips with exactly its schema.

Every random draw is a hash of (seed, row id, draw number), so the output is the same for a
seed and size whatever the partitioning, and it scales to tens of millions of rows.

The fare follows a metered process: a base fare, a per-mile and a per-minute rate, night and
rush-hour surcharges, a flat airport fare between JFK and Manhattan, and meter noise. Trip
duration depends on distance and on traffic speed, which varies with the hour and the weekend.
"""

from __future__ import annotations

import datetime as dt
import math

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

# The columns of `samples.nyctaxi.trips` the pipeline reads, shared with the generator.
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
SOURCE_COLUMNS = {field.name: field.dataType.simpleString() for field in TRIPS_SCHEMA}
TRIP_ID = "trip_id"

# Cleaning: trips shorter, longer or dearer than these are dropped as implausible.
MIN_TRIP_DISTANCE = 0.1  # miles
MAX_TRIP_HOURS = 6
MAX_FARE = 500.0

# Zips ordered from busiest (Midtown) to quietest; the last two are the airports.
MANHATTAN_ZIPS = [
    10001,
    10016,
    10019,
    10022,
    10036,
    10011,
    10003,
    10010,
    10017,
    10018,
    10023,
    10024,
    10028,
    10021,
    10065,
    10013,
    10012,
    10014,
    10002,
    10009,
    10025,
    10029,
    10128,
    10075,
    10007,
    10006,
    10004,
    10282,
    10038,
    10005,
]
OUTER_ZIPS = [11201, 11211, 11215, 11101, 11103, 11217, 11238, 10451, 10463, 11377]
JFK_ZIP, LGA_ZIP = 11430, 11371
ZIPS = MANHATTAN_ZIPS + OUTER_ZIPS + [LGA_ZIP, JFK_ZIP]

START = dt.datetime(2016, 1, 1)
SPAN_SECONDS = 60 * 24 * 3600  # two months, like the Databricks sample
JFK_FLAT_FARE = 52.0
_HASH_MODULUS = 2_147_483_629  # a prime below 2**31


def _uniform(seed: int, draw: int) -> Column:
    """A uniform draw in (0, 1) for each row, a pure function of (seed, id, draw)."""
    hashed = F.pmod(F.xxhash64(F.lit(seed), F.col("id"), F.lit(draw)), F.lit(_HASH_MODULUS))
    return (hashed + F.lit(0.5)) / F.lit(float(_HASH_MODULUS))


def _normal(seed: int, draw: int) -> Column:
    """A standard normal draw (Box-Muller over two uniform draws)."""
    return F.sqrt(-2.0 * F.log(_uniform(seed, draw))) * F.cos(2 * math.pi * _uniform(seed, draw + 1))


def _pick_zip(u: Column) -> Column:
    """A zip from ZIPS, skewed towards the busy ones at the head of the list."""
    index = F.floor(F.pow(u, F.lit(2.2)) * len(ZIPS)).cast("int")
    return F.element_at(F.array(*[F.lit(z) for z in ZIPS]), index + 1)


def _traffic_speed_mph(hour: Column, weekend: Column, noise: Column) -> Column:
    """Slow in weekday rush hours, fast at night and on weekends."""
    rush = (~weekend) & (hour.between(7, 9) | hour.between(16, 19))
    night = (hour >= 22) | (hour <= 5)
    base = F.when(rush, 7.5).when(night, 17.0).when(weekend, 13.0).otherwise(10.5)
    return F.greatest(base * F.exp(0.25 * noise), F.lit(3.0))


def _metered_fare(distance: Column, minutes: Column, hour: Column, weekend: Column) -> Column:
    """NYC metered fare: $2.50 base, $2.50/mile, $0.25/minute in traffic, night and rush surcharges."""
    night = F.when((hour >= 20) | (hour < 6), 0.5).otherwise(0.0)
    peak = F.when((~weekend) & hour.between(16, 19), 1.0).otherwise(0.0)
    return 2.5 + 2.5 * distance + 0.25 * minutes + night + peak


def generate_trips(spark: SparkSession, rows: int = 20_000, seed: int = 42) -> DataFrame:
    """`rows` trips with exactly the columns and types of `samples.nyctaxi.trips`."""
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    partitions = max(1, min(rows // 250_000, 64))
    base = spark.range(0, rows, numPartitions=partitions)
    pickup_zip = _pick_zip(_uniform(seed, 1))
    nearby = F.element_at(
        F.array(*[F.lit(z) for z in ZIPS]),
        (F.floor(_uniform(seed, 3) * len(MANHATTAN_ZIPS)) + 1).cast("int"),
    )
    trips = (
        base.withColumn(
            "tpep_pickup_datetime",
            F.timestamp_seconds(
                F.lit(int(START.replace(tzinfo=dt.UTC).timestamp()))
                + F.floor(_uniform(seed, 0) * SPAN_SECONDS)
            ),
        )
        .withColumn("pickup_zip", pickup_zip)
        .withColumn(
            "dropoff_zip",
            F.when(_uniform(seed, 2) < 0.7, nearby).otherwise(_pick_zip(_uniform(seed, 4))),
        )
        .withColumn("hour", F.hour("tpep_pickup_datetime"))
        .withColumn("weekend", F.dayofweek("tpep_pickup_datetime").isin(1, 7))
        .withColumn(
            "airport",
            F.col("pickup_zip").isin(JFK_ZIP, LGA_ZIP) | F.col("dropoff_zip").isin(JFK_ZIP, LGA_ZIP),
        )
        .withColumn(
            "trip_distance",
            F.round(
                F.least(
                    F.greatest(
                        F.when(F.col("airport"), 11.0 + 3.0 * _normal(seed, 5)).otherwise(
                            F.exp(0.55 + 0.75 * _normal(seed, 7))
                        ),
                        F.lit(0.1),
                    ),
                    F.lit(40.0),
                ),
                2,
            ),
        )
        .withColumn(
            "minutes",
            F.col("trip_distance")
            / _traffic_speed_mph(F.col("hour"), F.col("weekend"), _normal(seed, 9))
            * 60
            + 1.0,
        )
        .withColumn(
            "tpep_dropoff_datetime",
            F.timestamp_seconds(
                F.unix_timestamp("tpep_pickup_datetime") + F.round(F.col("minutes") * 60).cast("long")
            ),
        )
        .withColumn(
            "fare_amount",
            F.when(
                F.col("pickup_zip").isin(JFK_ZIP) & F.col("dropoff_zip").isin(MANHATTAN_ZIPS)
                | F.col("dropoff_zip").isin(JFK_ZIP) & F.col("pickup_zip").isin(MANHATTAN_ZIPS),
                F.lit(JFK_FLAT_FARE),
            ).otherwise(
                F.greatest(
                    F.round(
                        (
                            _metered_fare(
                                F.col("trip_distance"), F.col("minutes"), F.col("hour"), F.col("weekend")
                            )
                            + 1.2 * _normal(seed, 11)
                        )
                        * 2
                    )
                    / 2,
                    F.lit(2.5),
                )
            ),
        )
    )
    return trips.select(*[F.col(field.name).cast(field.dataType).alias(field.name) for field in TRIPS_SCHEMA])


def clean_trips(trips: DataFrame, min_trip_distance: float = MIN_TRIP_DISTANCE) -> DataFrame:
    """Drop incomplete and implausible trips and add a stable `trip_id`."""
    duration_hours = (
        F.unix_timestamp("tpep_dropoff_datetime") - F.unix_timestamp("tpep_pickup_datetime")
    ) / 3600
    columns = [field.name for field in TRIPS_SCHEMA]
    return (
        trips.select(*columns)
        .dropna()
        .where(F.col("trip_distance") >= min_trip_distance)
        .where((F.col("fare_amount") > 0) & (F.col("fare_amount") <= MAX_FARE))
        .where((duration_hours > 0) & (duration_hours <= MAX_TRIP_HOURS))
        .dropDuplicates(columns)
        .withColumn(TRIP_ID, F.xxhash64(*columns))
        # Zips as bigint: the type of the feature tables' keys and of the model's inputs (an MLflow
        # `long`, which a client's 64-bit integers satisfy).
        .withColumns({zip_code: F.col(zip_code).cast("bigint") for zip_code in ("pickup_zip", "dropoff_zip")})
    )
