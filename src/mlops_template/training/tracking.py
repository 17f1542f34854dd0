"""Log a trained model to MLflow: parameters, metrics, the model, plots, dataset lineage, run tags."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.data.spark_dataset_source import SparkDatasetSource
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema

from mlops_template.platform.feature_store import FeatureStore, TrainingSet
from mlops_template.problem_spec import ProblemSpec
from mlops_template.training.evaluate import Metrics
from mlops_template.training.model import TrainedModel
from mlops_template.training.plots import (
    calibration_figure,
    feature_importance_figure,
    predicted_vs_actual_figure,
    residuals_figure,
    roc_figure,
)

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
METRIC_PREFIX = "test_"
SIGNATURE_SAMPLE_ROWS = 1_000
INPUT_EXAMPLE_ROWS = 5

# MLflow's sklearn flavour saves with skops by default outside Databricks (and cloudpickle on
# Databricks). skops refuses to load any type it does not trust; it trusts scikit-learn's own.
# We keep skops on both platforms, so one artifact format everywhere and loading cannot run
# arbitrary code, and trust exactly the types a fitted model adds beyond those (found with
# `skops.io.get_untrusted_types`): `numpy.dtype`, which scikit-learn's encoders keep, and the
# spec's `trusted_types` (its model library's). MLflow loads the saved model back with this list
# before logging, so a library upgrade that adds a type fails here, naming it, not at serving.
GENERIC_TRUSTED_TYPES = ("numpy.dtype",)
# Pinned from this environment: what loading the model needs (these and the spec's
# `model_packages`), and nothing to infer. Letting MLflow infer requirements would load the model
# in a subprocess on every log (~12 s).
_MODEL_PACKAGES = ("mlflow", "scikit-learn", "skops", "pandas", "numpy")
_PACKAGE = __name__.partition(".")[0]


@dataclass(frozen=True)
class RunContext:
    """Where the training data came from and which deployment and job run trained the model."""

    prepared_table: str
    feature_tables: Mapping[str, str]  # feature table `name` -> full name
    bundle_target: str
    job_run_id: str
    git_sha: str = ""  # the deployed commit (bundle variable git_sha); "" = ask $GIT_SHA / git


@dataclass(frozen=True)
class TrainingRun:
    """The MLflow run and logged model of one training."""

    run_id: str
    model_uri: str
    metrics: Metrics
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


def model_signature(spec: ProblemSpec, sample: pd.DataFrame, output: np.ndarray) -> ModelSignature:
    """The spec's model inputs with their types, every one required, and the output inferred.

    Inferring the inputs from a sample would make a column that happens to hold nulls optional
    (a request may omit it), but the model needs every column; nulls as values stay allowed (NaN
    in a double). The output is the prediction, or one probability per class for a classifier.
    """
    inputs = Schema([ColSpec(model_input.type, model_input.name) for model_input in spec.model_inputs])
    return ModelSignature(inputs=inputs, outputs=infer_signature(sample, output).outputs)


def model_requirements(spec: ProblemSpec) -> list[str]:
    """The pip requirements of the logged model, pinned to the versions that trained it."""
    return [f"{package}=={version(package)}" for package in (*_MODEL_PACKAGES, *spec.model_packages)]


@contextmanager
def model_code(spec: ProblemSpec) -> Iterator[list[str]]:
    """`code_paths` shipping this package's modules the fitted model is made of (its trusted types
    from here, e.g. a problem's own transformer) under empty package `__init__` files: the serving
    container has MLflow and the pip requirements, not this package, so nothing else may load."""
    ours = [name for name in spec.trusted_types if name.startswith(f"{_PACKAGE}.")]
    modules = sorted({name.rpartition(".")[0] for name in ours})
    if not modules:
        yield []
        return
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        for module in modules:
            target = root.joinpath(*module.split(".")).with_suffix(".py")
            for package in target.relative_to(root).parents[:-1]:
                (root / package / "__init__.py").parent.mkdir(parents=True, exist_ok=True)
                (root / package / "__init__.py").touch()
            shutil.copyfile(Path(importlib.import_module(module).__file__ or ""), target)
        yield [str(root / _PACKAGE)]


def _dataset(spec: ProblemSpec, frame: pd.DataFrame, source_table: str, name: str) -> PandasDataset:
    """What the model saw (inputs and label), sourced from the prepared table."""
    return mlflow.data.from_pandas(
        frame[[*spec.input_names, spec.label]],
        source=SparkDatasetSource(table_name=source_table),
        name=name,
        targets=spec.label,
    )


def _model_output(trained: TrainedModel, sample: pd.DataFrame) -> np.ndarray:
    """What the logged model returns for `sample`: predictions, or per-class probabilities."""
    model = trained.model
    return model.predict_proba(sample) if trained.spec.is_classifier else model.predict(sample)


@dataclass(frozen=True)
class FeatureServing:
    """Log the model with the feature lookups of `training_set` (the set whose source columns are
    a request's inputs): serving and batch scoring then look its features up from keys."""

    feature_store: FeatureStore
    training_set: TrainingSet


def log_training_run(
    experiment_id: str, trained: TrainedModel, context: RunContext, lookups: FeatureServing | None = None
) -> TrainingRun:
    """Log `trained` in a new run of the experiment and return the run and model URI.

    A classifier is logged to return per-class probabilities (`predict_proba`) through pyfunc,
    hence serving and spark_udf; the generic code takes the probability of label 1. With `lookups`
    the model is logged through the feature store (`fe.log_model` on Databricks) and its input
    example is a request: the request inputs alone.
    """
    spec = trained.spec
    tags = run_tags(context)
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params(
            {
                **trained.config.as_parameters(),
                "problem": spec.name,
                "prepared_table": context.prepared_table,
                **{f"feature_table_{name}": table for name, table in context.feature_tables.items()},
                "train_rows": len(trained.train),
            }
        )
        training_data = _dataset(spec, trained.train, context.prepared_table, "training_set")
        holdout_data = _dataset(spec, trained.holdout, context.prepared_table, "holdout_set")
        mlflow.log_input(training_data, context="training")
        mlflow.log_input(holdout_data, context="evaluation")

        sample = trained.train[spec.input_names].head(SIGNATURE_SAMPLE_ROWS)
        with model_code(spec) as code_paths:
            options: dict[str, Any] = {
                "signature": model_signature(spec, sample, _model_output(trained, sample)),
                "serialization_format": mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                "skops_trusted_types": [*GENERIC_TRUSTED_TYPES, *spec.trusted_types],
                "pip_requirements": model_requirements(spec),
                "pyfunc_predict_fn": "predict_proba" if spec.is_classifier else "predict",
                "code_paths": code_paths or None,
            }
            if lookups is None:
                example = sample.head(INPUT_EXAMPLE_ROWS)
                model_info = mlflow.sklearn.log_model(
                    trained.model, name=MODEL_ARTIFACT, input_example=example, **options
                )
            else:
                example = sample[spec.request_input_names].head(INPUT_EXAMPLE_ROWS)
                model_info = lookups.feature_store.log_model(
                    model=trained.model,
                    name=MODEL_ARTIFACT,
                    flavor=mlflow.sklearn,
                    training_set=lookups.training_set,
                    input_example=example,
                    **options,
                )
        mlflow.log_metrics(
            trained.metrics.as_dict(METRIC_PREFIX), model_id=model_info.model_id, dataset=holdout_data
        )
        _log_figures(trained)
    log.info("logged run %s with model %s", run.info.run_id, model_info.model_uri)
    return TrainingRun(run.info.run_id, model_info.model_uri, trained.metrics, tags)


def _log_figures(trained: TrainedModel) -> None:
    spec = trained.spec
    actual = trained.holdout[spec.label].to_numpy()
    predicted = trained.holdout_predictions
    if (importance := feature_importance_figure(trained.model)) is not None:
        mlflow.log_figure(importance, "plots/feature_importance.png")
    if spec.is_classifier:
        mlflow.log_figure(roc_figure(actual, predicted), "plots/roc.png")
        mlflow.log_figure(calibration_figure(actual, predicted), "plots/calibration.png")
    else:
        mlflow.log_figure(residuals_figure(actual, predicted, spec.label), "plots/residuals.png")
        mlflow.log_figure(
            predicted_vs_actual_figure(actual, predicted, spec.label), "plots/predicted_vs_actual.png"
        )
