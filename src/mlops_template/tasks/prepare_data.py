"""Task `prepare_data`: read the trips source, check its schema, write a cleaned trips table."""

from __future__ import annotations

import logging

from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mlops_template.data.schema import TRIPS_SCHEMA
from mlops_template.platform import Platform
from mlops_template.tasks.common import TaskConfig, task_entry_point

log = logging.getLogger(__name__)

MAX_TRIP_HOURS = 6
MAX_FARE = 500.0


class SourceSchemaError(ValueError):
    """The source table lacks a trips column or has it with another type."""


class PrepareDataConfig(TaskConfig):
    source_table: str
    output_table: str
    min_trip_distance: float = Field(default=0.1, ge=0)


def check_trips_schema(df: DataFrame, table: str) -> None:
    """Fail naming every missing or mistyped column of the trips schema."""
    actual = {field.name: field.dataType for field in df.schema}
    problems = [
        f"{field.name} missing"
        if field.name not in actual
        else f"{field.name} is {actual[field.name].simpleString()}, expected {field.dataType.simpleString()}"
        for field in TRIPS_SCHEMA
        if actual.get(field.name) != field.dataType
    ]
    if problems:
        raise SourceSchemaError(
            f"source table {table} does not have the trips schema: {'; '.join(problems)}. "
            "Point the `source_table` bundle variable at a table with the columns of "
            "samples.nyctaxi.trips."
        )


def clean_trips(trips: DataFrame, min_trip_distance: float) -> DataFrame:
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
        .withColumn("trip_id", F.xxhash64(*columns))
    )


def run(platform: Platform, config: PrepareDataConfig) -> None:
    trips = platform.read_table(config.source_table)
    check_trips_schema(trips, config.source_table)
    cleaned = clean_trips(trips, config.min_trip_distance)
    platform.save_table(cleaned, config.output_table)
    kept = platform.read_table(config.output_table).count()
    log.info("kept %d trips in %s", kept, config.output_table)


main = task_entry_point(PrepareDataConfig, run)
