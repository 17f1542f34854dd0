"""Training on real local Spark and MLflow: config, split, model, logging and the logged model's loading."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from mlops_template.data.generator import generate_trips
from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
from mlops_template.platform import LocalPlatform
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.prepare_data import clean_trips
from mlops_template.tasks.train import TrainConfig
from mlops_template.training.config import TrainingConfig, TrainingConfigError
from mlops_template.training.evaluate import is_holdout
from mlops_template.training.model import TrainedModel, TrainingSetError, model_input, train_model
from mlops_template.training.tracking import RunContext, TrainingRun, log_training_run

FAST = {"n_estimators": 30, "num_leaves": 15, "learning_rate": 0.2}
EXPERIMENT = "/Shared/test-training"


def training_frame(spark: SparkSession, rows: int = 3_000, seed: int = 42) -> DataFrame:
    """Generated trips with stand-ins for the looked-up features (nulls included), cached."""
    trips = clean_trips(generate_trips(spark, rows=rows, seed=seed), min_trip_distance=0.1)
    by_pickup, by_dropoff = Window.partitionBy("pickup_zip"), Window.partitionBy("dropoff_zip")
    some_missing = F.pmod(F.col("trip_id"), F.lit(5)) == 0
    frame = (
        trips.withColumn("pickup_hour", F.hour("tpep_pickup_datetime"))
        .withColumn("pickup_weekday", F.dayofweek("tpep_pickup_datetime"))
        .withColumn("mean_fare_window_1h_pickup_zip", F.when(~some_missing, F.avg(LABEL).over(by_pickup)))
        .withColumn(
            "count_trips_window_1h_pickup_zip", F.when(~some_missing, F.count(F.lit(1)).over(by_pickup))
        )
        .withColumn("count_trips_window_30m_dropoff_zip", F.count(F.lit(1)).over(by_dropoff))
        .withColumn("dropoff_is_weekend", F.dayofweek("tpep_dropoff_datetime").isin(1, 7))
    )
    return frame.cache()


def context(target: str = "test") -> RunContext:
    return RunContext("test.trips.clean", "test.features.pickup", "test.features.dropoff", target, "run-17")


@pytest.fixture(scope="module")
def frame(spark: SparkSession) -> DataFrame:
    return training_frame(spark)


@pytest.fixture(scope="module")
def trained(frame: DataFrame) -> TrainedModel:
    return train_model(frame, TrainingConfig(**FAST))


@pytest.fixture(scope="module")
def logged(platform: LocalPlatform, trained: TrainedModel) -> TrainingRun:
    return log_training_run(platform.experiment_id(EXPERIMENT), trained, context())


def test_config_overrides_merge_over_defaults() -> None:
    config = TrainingConfig.from_json('{"n_estimators": 12, "max_rmse": 5}')
    assert (config.n_estimators, config.max_rmse) == (12, 5.0)
    assert config.learning_rate == TrainingConfig().learning_rate
    assert TrainingConfig.from_json("") == TrainingConfig.from_json("{}") == TrainingConfig()
    assert config.lgbm_params()["n_estimators"] == 12
    assert "max_rmse" not in config.lgbm_params()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"n_estimator": 5}', "unknown parameter 'n_estimator'"),
        ('{"learning_rate": -1}', "learning_rate"),
        ("[1, 2]", "must be a JSON object"),
        ("{n_estimators: 5}", "not valid JSON"),
    ],
)
def test_bad_training_params_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(TrainingConfigError, match=message):
        TrainingConfig.from_json(text)


def test_task_parameters_parse_training_params() -> None:
    args = [
        "--trips-table=c.s.trips",
        "--pickup-features-table=c.s.pickup",
        "--dropoff-features-table=c.s.dropoff",
        "--experiment-name=/Shared/x",
        "--model-name=c.s.fare_model",
        "--bundle-target=dev",
        "--job-run-id=42",
    ]
    config = build_config(TrainConfig, [*args, '--training-params={"num_leaves": 7}'])
    assert config.training_params.num_leaves == 7
    assert build_config(TrainConfig, args).training_params == TrainingConfig()
    with pytest.raises(TaskArgumentError, match=r"--training-params.*unknown parameter 'num_leaf'"):
        build_config(TrainConfig, [*args, '--training-params={"num_leaf": 7}'])
    with pytest.raises(TaskArgumentError, match=r"--model-name.*three-level"):
        build_config(TrainConfig, [*args[:4], "--model-name=fare_model", *args[5:]])


def test_holdout_is_the_training_split_and_a_stable_share(frame: DataFrame, trained: TrainedModel) -> None:
    flags = frame.select("trip_id", is_holdout(0.2).alias("small"), is_holdout(0.3).alias("large")).toPandas()
    assert set(flags.trip_id[flags.small]) == set(trained.holdout.trip_id)
    assert 0.15 < flags.small.mean() < 0.25
    assert (flags.large | ~flags.small).all()  # a larger test_size only adds trips


def test_model_trains_through_nulls_and_passes_default_thresholds(trained: TrainedModel) -> None:
    defaults = TrainingConfig()
    assert trained.train[MODEL_INPUT_COLUMNS].isna().any().any()
    assert set(trained.train.trip_id).isdisjoint(trained.holdout.trip_id)
    assert trained.metrics.rows == len(trained.holdout)
    assert trained.metrics.rmse < defaults.max_rmse / 2
    assert trained.metrics.r2 > defaults.min_r2 + 0.2
    assert list(trained.pipeline[-1].booster_.feature_name()) == MODEL_INPUT_COLUMNS


def test_training_set_without_model_columns_fails(frame: DataFrame) -> None:
    with pytest.raises(TrainingSetError, match="pickup_hour"):
        train_model(frame.drop("pickup_hour"), TrainingConfig(**FAST))


def test_run_logs_params_metrics_tags_lineage_and_plots(logged: TrainingRun, trained: TrainedModel) -> None:
    client = MlflowClient()
    run = client.get_run(logged.run_id)
    assert run.data.tags["git_sha"] == "test-sha"
    assert run.data.tags["bundle_target"] == "test"
    assert run.data.tags["job_run_id"] == "run-17"
    assert run.data.params["n_estimators"] == "30"
    assert run.data.params["trips_table"] == "test.trips.clean"
    assert run.data.metrics["test_rmse"] == pytest.approx(trained.metrics.rmse)
    contexts = {i.dataset.name: i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training_set": "training", "holdout_set": "evaluation"}
    assert "test.trips.clean" in run.inputs.dataset_inputs[0].dataset.source
    plots = {a.path for a in client.list_artifacts(logged.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("feature_importance", "residuals", "predicted_vs_actual")}


def test_logged_model_requires_every_input_as_double(logged: TrainingRun) -> None:
    inputs = mlflow.models.get_model_info(logged.model_uri).signature.inputs
    assert inputs.input_names() == MODEL_INPUT_COLUMNS
    assert {spec.type.name for spec in inputs.inputs} == {"double"}
    assert all(spec.required for spec in inputs.inputs)


def test_logged_model_predicts_the_same_through_pyfunc_and_spark_udf(
    spark: SparkSession, logged: TrainingRun, trained: TrainedModel, frame: DataFrame
) -> None:
    rows = frame.orderBy("trip_id").limit(200)
    expected = trained.pipeline.predict(rows.select(*MODEL_INPUT_COLUMNS).toPandas().astype("float64"))

    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    inputs = model_input(rows).toPandas()
    assert inputs.isna().any().any()
    np.testing.assert_allclose(pyfunc.predict(inputs), expected, rtol=1e-9)

    udf = mlflow.pyfunc.spark_udf(spark, logged.model_uri, result_type="double", env_manager="local")
    scored = model_input(rows).withColumn("prediction", udf(*MODEL_INPUT_COLUMNS)).toPandas()
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-9)


def test_logged_model_accepts_a_request_with_nulls(logged: TrainingRun) -> None:
    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    request = pd.DataFrame([dict.fromkeys(MODEL_INPUT_COLUMNS, None) | {"trip_distance": 2.5}])
    assert np.isfinite(pyfunc.predict(request)).all()
