"""Benchmark batch scoring: `mlflow.pyfunc.spark_udf` on local Spark vs in-process pandas predict.

    .venv/bin/python benchmarks/batch_scoring.py [--rows 2000000] [--arrow-batch 50000]

Trains the problem spec's model (`load_problem()`; `$MLOPS_PROBLEM` selects another spec) on a
small training set of its sample data, logs and registers it in a temporary local MLflow store,
then generates ROWS source rows with the spec's `sample_source`, cleans them with its `prepare`,
writes its feature tables and joins the rows with their point-in-time features (none of this
timed; rows the cleaning drops are not scored), and scores them twice with the same version:
- spark_udf: the scoring task's own `score` function, forced with a `noop` write, timed warm
  (after one untimed run that starts the Python workers and loads the model in them);
- in-process: `mlflow.pyfunc.load_model(...).predict` on the same rows' model inputs as one
  pandas frame (collecting the rows to pandas is not timed).
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
from sample_data import prepare_sample, register_model, sample_training_set, write_features

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.platform import activated
from mlops_template.problem_spec import ProblemSpec, load_problem
from mlops_template.scoring.batch import ScoringModel, score
from mlops_template.training.dataset import build_feature_set
from mlops_template.training.model import model_input

MODEL_NAME = "bench.scoring.model"
TRAINING_ROWS = 20_000


def rows_to_score(platform: LocalPlatform, spec: ProblemSpec, rows: int) -> DataFrame:
    """`rows` unlabelled sample rows, cleaned, with their point-in-time features, cached."""
    schema = "bench.scoring"
    prepared = prepare_sample(platform, spec, schema, rows, seed=2).drop(spec.label)
    write_features(platform, schema)
    featured = build_feature_set(platform, spec, prepared, schema)
    return featured.repartition(os.cpu_count() or 2).cache()


def time_spark_udf(rows: DataFrame, model: ScoringModel, spec: ProblemSpec) -> float:
    predictions = score(rows, model, dt.datetime.now(), spec)
    predictions.write.format("noop").mode("overwrite").save()  # warm-up: workers start, model loads
    started = time.perf_counter()
    predictions.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def time_in_process(rows: DataFrame, model: ScoringModel, spec: ProblemSpec) -> float:
    frame = model_input(rows, spec).toPandas()
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
    spec = load_problem()
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as state:
        platform = LocalPlatform("bench", Path(state), shuffle_partitions=os.cpu_count() or 2)
        with activated(platform):
            platform.spark.conf.set(
                "spark.sql.execution.arrow.maxRecordsPerBatch", str(arguments.arrow_batch)
            )
            platform.configure_mlflow()
            training_schema = "bench.training"
            training_set = sample_training_set(platform, spec, training_schema, TRAINING_ROWS, seed=1)
            version = register_model(platform, spec, MODEL_NAME, training_set, training_schema)
            model = ScoringModel(MODEL_NAME, "challenger", version)
            rows = rows_to_score(platform, spec, arguments.rows)
            scored = rows.count()
            spark_seconds = time_spark_udf(rows, model, spec)
            pandas_seconds = time_in_process(rows, model, spec)
            platform.stop()
    print(f"rows scored             {scored:>12,}  (of {arguments.rows:,} generated, problem {spec.name})")
    print(f"spark_udf (warm)        {spark_seconds:>10.2f} s  ({scored / spark_seconds:,.0f} rows/s)")
    print(f"in-process predict      {pandas_seconds:>10.2f} s  ({scored / pandas_seconds:,.0f} rows/s)")
    print(f"ratio spark_udf / local {spark_seconds / pandas_seconds:>10.2f}  (goal <= 2)")


if __name__ == "__main__":
    main()
