"""Batch scoring with spark_udf on real local Spark and the real local MLflow registry."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import mlflow
import numpy as np
import pytest
from pyspark.sql import functions as F

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.platform import MissingTableError
from mlops_template.problem.features import MODEL_INPUT_COLUMNS
from mlops_template.problem.spec import PROBLEM
from mlops_template.registry.versions import promote, register_challenger
from mlops_template.scoring.batch import NoModelVersionError, check_scoring_input, resolve_alias
from mlops_template.tasks import batch_score, features, prepare_data
from mlops_template.tasks.common import build_config
from mlops_template.training.dataset import build_feature_set
from mlops_template.training.model import train_model
from mlops_template.training.tracking import RunContext, log_training_run
from problem.frames import FAST, config, training_frame

SCHEMA = "test.scoring"
TABLES = {"trips": f"{SCHEMA}.trips_clean", "predictions": f"{SCHEMA}.fare_predictions"}


def run_task(platform: LocalPlatform, task, config_type, **arguments: str) -> None:
    """Run a task module's `run` with arguments given as the job passes them."""
    config = build_config(config_type, [f"--{k.replace('_', '-')}={v}" for k, v in arguments.items()])
    task.run(platform, config)


@pytest.fixture(scope="module")
def tables(platform: LocalPlatform) -> dict[str, str]:
    """The clean trips and both feature tables, made by the pipeline's own tasks."""
    run_task(
        platform,
        prepare_data,
        prepare_data.PrepareDataConfig,
        source_table="samples.nyctaxi.trips",
        schema=SCHEMA,
    )
    run_task(platform, features, features.FeaturesConfig, schema=SCHEMA)
    return TABLES


@pytest.fixture(scope="module")
def model_name(platform: LocalPlatform, spark) -> Iterator[str]:
    """A model with two registered versions; version 1 is champion."""
    platform.configure_mlflow()
    name = f"test.scoring_{uuid.uuid4().hex[:8]}.fare_model"
    frame = training_frame(spark, seed=5)
    for training in (config(**FAST), config(n_estimators=3, num_leaves=4)):
        context = RunContext(TABLES["trips"], PROBLEM.feature_table_names(SCHEMA), "test", "1")
        run = log_training_run(
            platform.experiment_id("/Shared/test-scoring"), train_model(frame, training, PROBLEM), context
        )
        register_challenger(name, run)
    promote(name, 1)
    yield name


def score(platform: LocalPlatform, model_name: str, schema: str = SCHEMA, **extra: str) -> None:
    run_task(
        platform, batch_score, batch_score.BatchScoreConfig, model_name=model_name, schema=schema, **extra
    )


def test_spark_predictions_equal_in_process_predict_of_the_champion(platform, tables, model_name):
    score(platform, model_name)
    predictions = platform.read_table(tables["predictions"]).toPandas().set_index("trip_id")
    trips = platform.read_table(tables["trips"])
    assert len(predictions) == trips.count()
    assert set(predictions["model_version"]) == {1}
    assert set(predictions["model_alias"]) == {"champion"}
    rows = build_feature_set(platform, PROBLEM, trips, SCHEMA)
    frame = rows.select("trip_id", *[F.col(c).cast("double") for c in MODEL_INPUT_COLUMNS]).toPandas()
    expected = mlflow.pyfunc.load_model(f"models:/{model_name}/1").predict(frame[MODEL_INPUT_COLUMNS])
    actual = predictions.loc[frame["trip_id"], "prediction"].to_numpy()
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-6)


def test_rescoring_after_a_promotion_replaces_rows_without_duplicates(platform, tables, model_name):
    score(platform, model_name)
    before = platform.read_table(tables["predictions"]).count()
    promote(model_name, 2)
    try:
        score(platform, model_name)
    finally:
        promote(model_name, 1)
    after = platform.read_table(tables["predictions"])
    assert after.count() == before
    assert after.select("trip_id").distinct().count() == before
    assert {row["model_version"] for row in after.select("model_version").distinct().collect()} == {2}


def test_a_window_scores_only_its_trips_and_keeps_the_others(platform, tables, model_name):
    score(platform, model_name)
    total = platform.read_table(tables["predictions"]).count()
    score(platform, model_name, start="2016-01-10", end="2016-01-11")
    predictions = platform.read_table(tables["predictions"])
    assert predictions.count() == total
    latest = predictions.agg(F.max("scored_at")).first()[0]
    rescored = predictions.where(F.col("scored_at") == latest)
    assert 0 < rescored.count() < total
    days = {row[0].date().isoformat() for row in rescored.select("tpep_pickup_datetime").collect()}
    assert days == {"2016-01-10"}


def test_no_champion_says_to_run_the_pipeline_first(platform, tables):
    platform.configure_mlflow()
    with pytest.raises(NoModelVersionError, match="no version with alias 'champion'.*run the pipeline job"):
        resolve_alias("test.scoring_none.fare_model", "champion")


def test_the_task_without_a_champion_scores_nothing_says_why_and_succeeds(platform, tables, caplog):
    """Issue 11 §1.7: a first run whose challenger is rejected has no champion; batch_score must not fail."""
    platform.configure_mlflow()
    with caplog.at_level("WARNING", logger="mlops_template.tasks.batch_score"):
        score(platform, "test.scoring_none.fare_model", schema="test.scoring_none")
    assert "nothing scored" in caplog.text and "no version with alias 'champion'" in caplog.text
    assert not platform.table_exists("test.scoring_none.fare_predictions")


def test_missing_feature_table_says_to_run_the_feature_job(platform, tables, model_name):
    platform.save_table(platform.read_table(tables["trips"]), "test.scoring_nofeatures.trips_clean")
    with pytest.raises(
        MissingTableError, match="test.scoring_nofeatures.pickup_features does not exist.*Run the feature job"
    ):
        score(platform, model_name, schema="test.scoring_nofeatures")


def test_rows_missing_model_inputs_are_rejected_naming_the_columns(platform, tables):
    rows = platform.read_table(tables["trips"])
    with pytest.raises(ValueError, match=r"lack the columns \['pickup_hour'"):
        check_scoring_input(rows, PROBLEM)
