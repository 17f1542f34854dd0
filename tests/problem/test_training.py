"""The taxi fare model on real local Spark and MLflow: split, fit, logging and the logged model."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pyspark.sql import DataFrame, SparkSession

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.problem.features import MODEL_INPUT_COLUMNS
from mlops_template.problem.model import NUMERIC_INPUTS
from mlops_template.problem.spec import PROBLEM
from mlops_template.training.evaluate import is_holdout
from mlops_template.training.model import TrainedModel, TrainingSetError, model_input, train_model
from mlops_template.training.tracking import RunContext, TrainingRun, log_training_run
from problem.frames import FAST, config, training_frame

EXPERIMENT = "/Shared/test-training"


def context(target: str = "test") -> RunContext:
    return RunContext("test.trips.trips_clean", PROBLEM.feature_table_names("test.trips"), target, "run-17")


@pytest.fixture(scope="module")
def frame(spark: SparkSession) -> DataFrame:
    return training_frame(spark)


@pytest.fixture(scope="module")
def trained(frame: DataFrame) -> TrainedModel:
    return train_model(frame, config(**FAST), PROBLEM)


@pytest.fixture(scope="module")
def logged(platform: LocalPlatform, trained: TrainedModel) -> TrainingRun:
    return log_training_run(platform.experiment_id(EXPERIMENT), trained, context())


def test_holdout_is_the_training_split_and_a_stable_share(frame: DataFrame, trained: TrainedModel) -> None:
    flags = frame.select(
        "trip_id", is_holdout(0.2, "trip_id").alias("small"), is_holdout(0.3, "trip_id").alias("large")
    ).toPandas()
    assert set(flags.trip_id[flags.small]) == set(trained.holdout.trip_id)
    assert 0.15 < flags.small.mean() < 0.25
    assert (flags.large | ~flags.small).all()  # a larger test_size only adds trips


def test_model_trains_through_nulls_and_passes_default_thresholds(trained: TrainedModel) -> None:
    thresholds = PROBLEM.gate_thresholds
    assert trained.train[MODEL_INPUT_COLUMNS].isna().any().any()
    assert set(trained.train.trip_id).isdisjoint(trained.holdout.trip_id)
    assert trained.metrics.rows == len(trained.holdout)
    assert trained.metrics["rmse"] < thresholds["max_rmse"] / 2
    assert trained.metrics["r2"] > thresholds["min_r2"] + 0.2
    derived = [*NUMERIC_INPUTS, "pickup_hour", "pickup_weekday"]
    assert list(trained.model[-1].booster_.feature_name()) == derived


def test_training_set_without_model_columns_fails(frame: DataFrame) -> None:
    with pytest.raises(TrainingSetError, match="tpep_pickup_datetime"):
        train_model(frame.drop("tpep_pickup_datetime"), config(**FAST), PROBLEM)


def test_run_logs_params_metrics_tags_lineage_and_plots(logged: TrainingRun, trained: TrainedModel) -> None:
    client = MlflowClient()
    run = client.get_run(logged.run_id)
    assert run.data.tags["git_sha"] == "test-sha"
    assert run.data.tags["bundle_target"] == "test"
    assert run.data.tags["job_run_id"] == "run-17"
    assert run.data.params["n_estimators"] == "30"
    assert run.data.params["gate_max_rmse"] == "8.0"
    assert run.data.params["prepared_table"] == "test.trips.trips_clean"
    assert run.data.params["feature_table_pickup_features"] == "test.trips.pickup_features"
    assert run.data.metrics["test_rmse"] == pytest.approx(trained.metrics["rmse"])
    contexts = {i.dataset.name: i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training_set": "training", "holdout_set": "evaluation"}
    assert "test.trips.trips_clean" in run.inputs.dataset_inputs[0].dataset.source
    plots = {a.path for a in client.list_artifacts(logged.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("feature_importance", "residuals", "predicted_vs_actual")}


def test_logged_model_requires_every_input_in_its_spec_type(logged: TrainingRun) -> None:
    inputs = mlflow.models.get_model_info(logged.model_uri).signature.inputs
    assert inputs.input_names() == MODEL_INPUT_COLUMNS
    assert {spec.name: spec.type.name for spec in inputs.inputs} == {
        i.name: i.type for i in PROBLEM.model_inputs
    }
    assert all(spec.required for spec in inputs.inputs)


def test_logged_model_ships_the_code_it_is_made_of(logged: TrainingRun) -> None:
    """The pipeline's own first step (trip_time.TripInputs) travels in the model's `code` directory
    (MLflow `code_paths`), under empty package `__init__` files and nothing else of this package:
    a serving container installs the pip requirements, not this package."""
    path = Path(mlflow.artifacts.download_artifacts(logged.model_uri)) / "code"
    shipped = sorted(str(file.relative_to(path)) for file in path.rglob("*.py"))
    assert shipped == [
        "mlops_template/__init__.py",
        "mlops_template/problem/__init__.py",
        "mlops_template/problem/trip_time.py",
    ]
    assert all((path / name).stat().st_size == 0 for name in shipped if name.endswith("__init__.py"))


def test_logged_model_predicts_the_same_through_pyfunc_and_spark_udf(
    spark: SparkSession, logged: TrainingRun, trained: TrainedModel, frame: DataFrame
) -> None:
    rows = frame.orderBy("trip_id").limit(200)
    expected = trained.model.predict(model_input(rows, PROBLEM).toPandas())

    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    inputs = model_input(rows, PROBLEM).toPandas()
    assert inputs.isna().any().any()
    np.testing.assert_allclose(pyfunc.predict(inputs), expected, rtol=1e-9)

    udf = mlflow.pyfunc.spark_udf(spark, logged.model_uri, result_type="double", env_manager="local")
    scored = model_input(rows, PROBLEM).withColumn("prediction", udf(*MODEL_INPUT_COLUMNS)).toPandas()
    np.testing.assert_allclose(scored["prediction"].to_numpy(), expected, rtol=1e-9)


def test_logged_model_accepts_a_request_with_nulls(logged: TrainingRun) -> None:
    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    request = pd.DataFrame(
        [
            dict.fromkeys(MODEL_INPUT_COLUMNS, None)
            | {"trip_distance": 2.5, "pickup_zip": 10001, "dropoff_zip": 10016}
            | dict.fromkeys(["count_trips_window_1h_pickup_zip", "count_trips_window_30m_dropoff_zip"], 0)
            | dict.fromkeys(
                ["tpep_pickup_datetime", "tpep_dropoff_datetime"], pd.Timestamp("2016-01-04 08:00")
            )
        ]
    )
    assert np.isfinite(pyfunc.predict(request)).all()
