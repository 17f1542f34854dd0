"""Taxi training frames without the feature tables, shared by the taxi training tests."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from mlops_template.problem.data import clean_trips, generate_trips
from mlops_template.problem.features import LABEL
from mlops_template.problem.spec import PROBLEM
from mlops_template.training.config import TrainingConfig

FAST = {"n_estimators": 30, "num_leaves": 15, "learning_rate": 0.2}


def config(**overrides: object) -> TrainingConfig:
    """The taxi spec's training config with flat `overrides` (as the job parameter gives them)."""
    return TrainingConfig.from_overrides(overrides, PROBLEM)


def training_frame(spark: SparkSession, rows: int = 3_000, seed: int = 42) -> DataFrame:
    """Generated trips with stand-ins for the looked-up features, cached: some trips found no window
    (null mean fare, the lookups' default count 0), as the point-in-time lookup gives them."""
    trips = clean_trips(generate_trips(spark, rows=rows, seed=seed))
    by_pickup, by_dropoff = Window.partitionBy("pickup_zip"), Window.partitionBy("dropoff_zip")
    some_missing = F.pmod(F.col("trip_id"), F.lit(5)) == 0
    frame = (
        trips.withColumn(
            "mean_fare_window_1h_pickup_zip", F.when(~some_missing, F.avg(LABEL).over(by_pickup))
        )
        .withColumn(
            "count_trips_window_1h_pickup_zip",
            F.when(~some_missing, F.count(F.lit(1)).over(by_pickup)).otherwise(0),
        )
        .withColumn("count_trips_window_30m_dropoff_zip", F.count(F.lit(1)).over(by_dropoff))
        .withColumn("dropoff_is_weekend", F.dayofweek("tpep_dropoff_datetime").isin(1, 7).cast("double"))
    )
    return frame.cache()
