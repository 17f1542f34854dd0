"""The trips generator, their cleaning and the prepare_data task with the taxi spec, on real local Spark."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from mlops_template.problem.data import JFK_FLAT_FARE, TRIPS_SCHEMA, clean_trips, generate_trips
from mlops_template.problem.spec import PROBLEM
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.prepare_data import PrepareDataConfig, SourceSchemaError, check_source_columns, run


@pytest.fixture(scope="module")
def trips(spark):
    return generate_trips(spark, rows=2_000, seed=7).cache()


def test_generator_has_exactly_the_samples_schema(trips):
    assert [(f.name, f.dataType) for f in trips.schema] == [(f.name, f.dataType) for f in TRIPS_SCHEMA]


def test_generator_is_deterministic_per_seed(spark, trips):
    again = generate_trips(spark, rows=2_000, seed=7)
    other = generate_trips(spark, rows=2_000, seed=8)
    assert trips.exceptAll(again).count() == 0
    assert trips.exceptAll(other).count() > 1_900


def test_generated_fares_follow_distance_time_and_airports(trips):
    pdf = trips.toPandas()
    assert pdf["trip_distance"].between(0.1, 40).all()
    assert (pdf["tpep_dropoff_datetime"] > pdf["tpep_pickup_datetime"]).all()
    assert pdf["fare_amount"].corr(pdf["trip_distance"]) > 0.8
    assert (pdf["fare_amount"] == JFK_FLAT_FARE).any()
    assert 8 < pdf["fare_amount"].median() < 20
    assert pdf["pickup_zip"].nunique() > 20


def test_generator_rejects_empty_sizes(spark):
    with pytest.raises(ValueError, match="positive"):
        generate_trips(spark, rows=0)


def test_schema_check_names_missing_and_mistyped_columns(trips):
    broken = trips.drop("pickup_zip").withColumn("fare_amount", F.col("fare_amount").cast("string"))
    with pytest.raises(SourceSchemaError, match="pickup_zip missing.*|fare_amount is string") as error:
        check_source_columns(broken, "cat.sch.src", PROBLEM)
    assert "pickup_zip missing" in str(error.value) and "fare_amount is string, expected double" in str(
        error.value
    )


def test_cleaning_drops_implausible_trips_and_adds_stable_ids(spark, trips):
    bad = spark.createDataFrame(
        [
            ("2016-01-01 10:00:00", "2016-01-01 09:00:00", 1.0, 5.0, 10001, 10002),  # ends before it starts
            ("2016-01-01 10:00:00", "2016-01-01 10:10:00", 0.0, 5.0, 10001, 10002),  # no distance
            ("2016-01-01 10:00:00", "2016-01-01 10:10:00", 1.0, -3.0, 10001, 10002),  # negative fare
            ("2016-01-01 10:00:00", "2016-01-01 10:10:00", 1.0, None, 10001, 10002),  # no fare
        ],
        "p string, d string, trip_distance double, fare_amount double, pickup_zip int, dropoff_zip int",
    ).select(
        F.to_timestamp("p").alias("tpep_pickup_datetime"),
        F.to_timestamp("d").alias("tpep_dropoff_datetime"),
        "trip_distance",
        "fare_amount",
        "pickup_zip",
        "dropoff_zip",
    )
    cleaned = clean_trips(trips.unionByName(bad).unionByName(trips.limit(10)))
    assert cleaned.count() == trips.count()
    assert cleaned.select("trip_id").distinct().count() == trips.count()
    assert cleaned.exceptAll(clean_trips(trips)).count() == 0


def test_prepare_data_task_writes_the_clean_table_named_by_the_spec(platform):
    config = build_config(PrepareDataConfig, ["--source-table=samples.nyctaxi.trips", "--schema", "cat.sch"])
    run(platform, config)
    rows = platform.read_table("cat.sch.trips_clean").count()
    assert 0 < rows <= platform.sample_rows


def test_task_arguments_are_checked_against_the_config():
    with pytest.raises(TaskArgumentError, match="--schema: .*two-level"):
        build_config(PrepareDataConfig, ["--source-table=a.b.c", "--schema=a.b.c"])
    with pytest.raises(TaskArgumentError, match="--colour: Extra inputs"):
        build_config(PrepareDataConfig, ["--source-table=a.b.c", "--schema=a.b", "--colour=red"])
    with pytest.raises(TaskArgumentError, match="expected --name=value"):
        build_config(PrepareDataConfig, ["positional"])
