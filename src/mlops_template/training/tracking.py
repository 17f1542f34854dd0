"""Log a trained model to MLflow: parameters, metrics, the model, plots, dataset lineage, run tags."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from importlib.metadata import version

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.data.spark_dataset_source import SparkDatasetSource
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
from mlops_template.training.evaluate import RegressionMetrics
from mlops_template.training.model import TrainedModel
from mlops_template.training.plots import (
    feature_importance_figure,
    predicted_vs_actual_figure,
    residuals_figure,
)

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
METRIC_PREFIX = "test_"
SIGNATURE_SAMPLE_ROWS = 1_000
INPUT_EXAMPLE_ROWS = 5

# MLflow's sklearn flavour saves with skops by default outside Databricks (and cloudpickle on
# Databricks). skops refuses to load any type it does not trust, and LightGBM's are not trusted by
# default. We keep skops on both platforms, so one artifact format everywhere and loading cannot
# run arbitrary code, and trust exactly the three types a fitted LGBMRegressor adds to a Pipeline
# (found with `skops.io.get_untrusted_types`). MLflow loads the saved model back with this list
# before logging, so a LightGBM upgrade that adds a type fails here, naming it, not at serving.
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMRegressor",
]
# Pinned from this environment: what loading the model needs, and nothing to infer. Letting
# MLflow infer requirements would load the model in a subprocess on every log (~12 s).
_MODEL_PACKAGES = ("mlflow", "scikit-learn", "lightgbm", "skops", "pandas", "numpy")


@dataclass(frozen=True)
class RunContext:
    """Where the training data came from and which deployment and job run trained the model."""

    trips_table: str
    pickup_features_table: str
    dropoff_features_table: str
    bundle_target: str
    job_run_id: str
    git_sha: str = ""  # the deployed commit (bundle variable git_sha); "" = ask $GIT_SHA / git


@dataclass(frozen=True)
class TrainingRun:
    """The MLflow run and logged model of one training."""

    run_id: str
    model_uri: str
    metrics: RegressionMetrics
    tags: dict[str, str]


def git_sha() -> str:
    """`$GIT_SHA`, else the checkout's HEAD when git is available, else "unknown"."""
    if sha := os.environ.get("GIT_SHA"):
        return sha
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def run_tags(context: RunContext) -> dict[str, str]:
    """Tags tying a run (and its model versions) to code, deployment target and job run."""
    return {
        "git_sha": context.git_sha or git_sha(),
        "bundle_target": context.bundle_target,
        "job_run_id": context.job_run_id,
    }


def model_signature(sample: pd.DataFrame, predictions: np.ndarray) -> ModelSignature:
    """The signature inferred from a sample, with every input required.

    A sample column that happens to hold nulls is inferred optional (a request may omit it), but
    the pipeline needs every column; nulls as values stay allowed (NaN in a double). Requiring all
    makes a request without a column fail schema enforcement, not the model.
    """
    inferred = infer_signature(sample, predictions)
    inputs = Schema([ColSpec(spec.type, spec.name) for spec in inferred.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


def model_requirements() -> list[str]:
    """The pip requirements of the logged model, pinned to the versions that trained it."""
    return [f"{package}=={version(package)}" for package in _MODEL_PACKAGES]


def _dataset(frame: pd.DataFrame, source_table: str, name: str) -> PandasDataset:
    """What the model saw (inputs and label), sourced from the trips table."""
    return mlflow.data.from_pandas(
        frame[[*MODEL_INPUT_COLUMNS, LABEL]],
        source=SparkDatasetSource(table_name=source_table),
        name=name,
        targets=LABEL,
    )


def log_training_run(experiment_id: str, trained: TrainedModel, context: RunContext) -> TrainingRun:
    """Log `trained` in a new run of the experiment and return the run and model URI."""
    tags = run_tags(context)
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params(
            {
                **trained.config.model_dump(),
                "trips_table": context.trips_table,
                "pickup_features_table": context.pickup_features_table,
                "dropoff_features_table": context.dropoff_features_table,
                "train_rows": len(trained.train),
            }
        )
        training_data = _dataset(trained.train, context.trips_table, "training_set")
        holdout_data = _dataset(trained.holdout, context.trips_table, "holdout_set")
        mlflow.log_input(training_data, context="training")
        mlflow.log_input(holdout_data, context="evaluation")

        sample = trained.train[MODEL_INPUT_COLUMNS].head(SIGNATURE_SAMPLE_ROWS)
        model_info = mlflow.sklearn.log_model(
            trained.pipeline,
            name=MODEL_ARTIFACT,
            signature=model_signature(sample, trained.pipeline.predict(sample)),
            input_example=sample.head(INPUT_EXAMPLE_ROWS),
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=model_requirements(),
        )
        mlflow.log_metrics(
            trained.metrics.as_dict(METRIC_PREFIX), model_id=model_info.model_id, dataset=holdout_data
        )
        _log_figures(trained)
    log.info("logged run %s with model %s", run.info.run_id, model_info.model_uri)
    return TrainingRun(run.info.run_id, model_info.model_uri, trained.metrics, tags)


def _log_figures(trained: TrainedModel) -> None:
    actual = trained.holdout[LABEL].to_numpy()
    predicted = trained.holdout_predictions
    mlflow.log_figure(feature_importance_figure(trained.pipeline), "plots/feature_importance.png")
    mlflow.log_figure(residuals_figure(actual, predicted), "plots/residuals.png")
    mlflow.log_figure(predicted_vs_actual_figure(actual, predicted), "plots/predicted_vs_actual.png")
