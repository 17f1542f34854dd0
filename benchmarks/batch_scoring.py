"""Benchmark batch scoring: `mlflow.pyfunc.spark_udf` on local Spark vs in-process pandas predict.

    .venv/bin/python benchmarks/batch_scoring.py [--rows 2000000] [--arrow-batch 50000]

Trains the pipeline's model (small training set), logs and registers it in a temporary local
MLflow store, generates ROWS trips with their model inputs, and scores them twice with the same
model version:
- spark_udf: the scoring task's own `score` function, forced with a `noop` write, timed warm
  (after one untimed run that starts the Python workers and loads the model in them);
- in-process: `mlflow.pyfunc.load_model(...).predict` on the same rows as one pandas frame
  (collecting the rows to pandas is not timed).
Prints both timings and the ratio spark_udf / in-process (goal: <= 2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import tempfile
import time
from pathlib import Path

import mlflow
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.platform import activated
from mlops_template.problem.data import generate_trips
from mlops_template.problem.features import (
    DROPOFF_FEATURES,
    LABEL,
    MODEL_INPUT_COLUMNS,
    PICKUP_FEATURES,
    add_trip_inputs,
)
from mlops_template.problem.spec import PROBLEM
from mlops_template.registry.versions import register_challenger
from mlops_template.scoring.batch import ScoringModel, score
from mlops_template.training.config import TrainingConfig
from mlops_template.training.model import train_model
from mlops_template.training.tracking import RunContext, log_training_run

MODEL_NAME = "bench.scoring.fare_model"


def with_model_inputs(trips: DataFrame) -> DataFrame:
    """Trips with every model input; the feature columns get plausible values, not lookups."""
    rows = add_trip_inputs(trips).withColumn("trip_id", F.xxhash64(*trips.columns))
    for name in PICKUP_FEATURES + DROPOFF_FEATURES:
        rows = rows.withColumn(name, (F.rand(seed=len(name)) * 20).cast("double"))
    return rows


def register_model(platform: LocalPlatform) -> ScoringModel:
    training_set = with_model_inputs(generate_trips(platform.spark, rows=20_000, seed=1))
    trained = train_model(training_set, TrainingConfig.defaults(PROBLEM), PROBLEM)
    context = RunContext("bench.taxi.trips_clean", PROBLEM.feature_table_names("bench.taxi"), "bench", "0")
    run = log_training_run(platform.experiment_id("/bench/batch-scoring"), trained, context)
    return ScoringModel(MODEL_NAME, "challenger", register_challenger(MODEL_NAME, run))


def time_spark_udf(rows: DataFrame, model: ScoringModel) -> float:
    predictions = score(rows, model, dt.datetime.now(), PROBLEM)
    predictions.write.format("noop").mode("overwrite").save()  # warm-up: workers start, model loads
    started = time.perf_counter()
    predictions.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def time_in_process(rows: DataFrame, model: ScoringModel) -> float:
    frame = rows.select(*[F.col(c).cast("double") for c in MODEL_INPUT_COLUMNS]).toPandas()
    loaded = mlflow.pyfunc.load_model(model.uri)
    loaded.predict(frame.head(1_000))  # same warm-up courtesy
    started = time.perf_counter()
    loaded.predict(frame)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--arrow-batch", type=int, default=50_000, help="Arrow records per batch")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as state:
        platform = LocalPlatform("bench", Path(state), shuffle_partitions=os.cpu_count() or 2)
        with activated(platform):
            platform.spark.conf.set(
                "spark.sql.execution.arrow.maxRecordsPerBatch", str(arguments.arrow_batch)
            )
            platform.configure_mlflow()
            model = register_model(platform)
            trips = generate_trips(platform.spark, rows=arguments.rows, seed=2).drop(LABEL)
            rows = with_model_inputs(trips).repartition(os.cpu_count() or 2).cache()
            rows.count()
            spark_seconds = time_spark_udf(rows, model)
            pandas_seconds = time_in_process(rows, model)
            platform.stop()
    print(f"rows scored             {arguments.rows:>12,}")
    print(f"spark_udf (warm)        {spark_seconds:>10.2f} s  ({arguments.rows / spark_seconds:,.0f} rows/s)")
    print(
        f"in-process predict      {pandas_seconds:>10.2f} s  ({arguments.rows / pandas_seconds:,.0f} rows/s)"
    )
    print(f"ratio spark_udf / local {spark_seconds / pandas_seconds:>10.2f}  (goal <= 2)")


if __name__ == "__main__":
    main()
