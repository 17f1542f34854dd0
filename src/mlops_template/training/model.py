"""Fit the problem's model on the training split and evaluate it on the held-out rows.

The model comes from the spec's factory (an unfitted scikit-learn estimator taking the spec's
model inputs by name); a regressor is judged on its predictions, a binary classifier on its
probability of label 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mlops_template.problem_spec import ProblemSpec
from mlops_template.training.config import TrainingConfig
from mlops_template.training.evaluate import Metrics, evaluate, is_holdout, predictions

log = logging.getLogger(__name__)

_HOLDOUT = "_holdout"
# Spark type of each model input type (the MLflow signature's column types).
SPARK_TYPES = {
    "double": "double",
    "long": "bigint",
    "integer": "int",
    "boolean": "boolean",
    "string": "string",
    "datetime": "timestamp",
}


class TrainingSetError(ValueError):
    """The training set lacks columns the model needs, has too few rows or labels it cannot learn."""


def input_columns(spec: ProblemSpec) -> list[Column]:
    """The model's inputs as Spark columns, each cast to its signature type (nulls stay null)."""
    return [F.col(i.name).cast(SPARK_TYPES[i.type]).alias(i.name) for i in spec.model_inputs]


def model_input(df: DataFrame, spec: ProblemSpec) -> DataFrame:
    """The model's inputs in signature order and types (for spark_udf scoring)."""
    return df.select(*input_columns(spec))


def to_model_frame(df: DataFrame, spec: ProblemSpec, *extra: Column) -> pd.DataFrame:
    """Training-set rows as pandas: inputs in their types (null double -> NaN), label, row id, `extra`."""
    _check_training_set(df, spec)
    label_type = "int" if spec.is_classifier else "double"
    return df.select(
        *input_columns(spec), F.col(spec.label).cast(label_type).alias(spec.label), spec.row_id, *extra
    ).toPandas()


def _check_training_set(df: DataFrame, spec: ProblemSpec) -> None:
    """Fail naming every column the model needs that `df` lacks."""
    missing = [name for name in [*spec.input_names, spec.label, spec.row_id] if name not in df.columns]
    if missing:
        raise TrainingSetError(f"the training set lacks the columns {missing}; it has {df.columns}")


def check_input_types(df: DataFrame, spec: ProblemSpec) -> None:
    """Fail naming every model input whose column type is not the spec's: a model logged with its
    feature lookups gets its signature from the training set's types (as `fe.log_model` does), so
    they must be the types the model is fitted and scored with."""
    _check_training_set(df, spec)
    wrong = [
        f"{i.name} is {df.schema[i.name].dataType.simpleString()}, the spec says {i.type} "
        f"({SPARK_TYPES[i.type]})"
        for i in spec.model_inputs
        if df.schema[i.name].dataType.simpleString() != SPARK_TYPES[i.type]
    ]
    if wrong:
        raise TrainingSetError(
            f"model input types differ from the training set: {'; '.join(wrong)}. Declare the column's "
            "type in the spec's model_inputs, or cast it where the prepared or feature table is made"
        )


def _check_labels(labels: pd.Series, spec: ProblemSpec) -> None:
    """A binary classifier learns from labels 0 and 1, both present."""
    if spec.is_classifier and set(labels.unique()) != {0, 1}:
        raise TrainingSetError(
            f"a binary classifier needs {spec.label} values 0 and 1 in the training rows, "
            f"got {sorted(labels.unique().tolist())}"
        )


def predict(model: Any, inputs: pd.DataFrame, spec: ProblemSpec) -> np.ndarray:
    """A fitted estimator's predictions as the metrics take them: values, or P(label 1)."""
    return predictions(spec, model.predict_proba(inputs) if spec.is_classifier else model.predict(inputs))


@dataclass(frozen=True)
class TrainedModel:
    """A fitted estimator with the frames it was trained and evaluated on."""

    model: Any  # the fitted scikit-learn estimator
    spec: ProblemSpec
    config: TrainingConfig
    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_predictions: np.ndarray
    metrics: Metrics


def train_model(training_set: DataFrame, config: TrainingConfig, spec: ProblemSpec) -> TrainedModel:
    """Split by row id, fit on the training rows and evaluate on the held-out rows.

    One Spark job collects both parts (no cache: serverless compute has none).
    """
    frame = to_model_frame(training_set, spec, is_holdout(config.test_size, spec.row_id).alias(_HOLDOUT))
    held_out = frame.pop(_HOLDOUT).to_numpy(dtype=bool)
    train, holdout = frame[~held_out].reset_index(drop=True), frame[held_out].reset_index(drop=True)
    if len(train) < 2 or holdout.empty:
        raise TrainingSetError(
            f"too few rows to train and evaluate: {len(train)} training and {len(holdout)} held-out rows"
        )
    _check_labels(train[spec.label], spec)
    model = spec.build_model(config.model_params).fit(train[spec.input_names], train[spec.label])
    predicted = predict(model, holdout[spec.input_names], spec)
    metrics = evaluate(spec, holdout[spec.label].to_numpy(), predicted)
    log.info("trained on %d rows; held-out %s", len(train), metrics.describe())
    return TrainedModel(model, spec, config, train, holdout, predicted, metrics)
