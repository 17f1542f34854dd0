"""The fare model: a scikit-learn Pipeline ending in a LightGBM regressor, and how it is trained.

The model's input contract is MODEL_INPUT_COLUMNS, every one a double where null (NaN) is allowed:
LightGBM routes missing values down a learned side of each split, so a trip whose zip had no
recent trips (no feature row as of its time) still gets a prediction. One type for every input
keeps the contract independent of whether a column happened to contain nulls.

Zips are numeric, not categorical: the per-zip effect the model needs is mostly carried by the
pickup feature table (mean fare per zip as of the trip, a leak-free target encoding); zip codes
are geographically ordered (100xx Manhattan, 104xx Bronx, 112xx Brooklyn, 11371 / 11430 the
airports), so range splits are meaningful; and an unseen zip at serving time is just a number,
with no category list frozen into the model that a new zip would fall outside of.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lightgbm import LGBMRegressor
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
from mlops_template.training.config import TrainingConfig
from mlops_template.training.evaluate import TRIP_ID, RegressionMetrics, is_holdout, regression_metrics

log = logging.getLogger(__name__)

_HOLDOUT = "_holdout"


class TrainingSetError(ValueError):
    """The training set lacks columns the model needs, or has too few rows."""


def build_pipeline(config: TrainingConfig) -> Pipeline:
    """Select MODEL_INPUT_COLUMNS by name (in a fixed order), then LightGBM."""
    inputs = ColumnTransformer(
        [("inputs", "passthrough", MODEL_INPUT_COLUMNS)], remainder="drop", verbose_feature_names_out=False
    ).set_output(transform="pandas")  # LightGBM then knows the feature names
    return Pipeline([("inputs", inputs), ("model", LGBMRegressor(**config.lgbm_params(), verbose=-1))])


def model_input(df: DataFrame) -> DataFrame:
    """The model's inputs as Spark columns of type double (for spark_udf scoring)."""
    return df.select(*[F.col(name).cast("double").alias(name) for name in MODEL_INPUT_COLUMNS])


def to_model_frame(df: DataFrame, *extra: Column) -> pd.DataFrame:
    """Training-set rows as pandas: the inputs as float64 (null -> NaN), label, trip_id, `extra`."""
    _check_training_set(df)
    return df.select(
        *[F.col(name).cast("double").alias(name) for name in MODEL_INPUT_COLUMNS],
        F.col(LABEL).cast("double").alias(LABEL),
        TRIP_ID,
        *extra,
    ).toPandas()


def _check_training_set(df: DataFrame) -> None:
    """Fail naming every column the model needs that `df` lacks."""
    missing = [name for name in [*MODEL_INPUT_COLUMNS, LABEL, TRIP_ID] if name not in df.columns]
    if missing:
        raise TrainingSetError(f"the training set lacks the columns {missing}; it has {df.columns}")


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with the frames it was trained and evaluated on."""

    pipeline: Pipeline
    config: TrainingConfig
    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_predictions: np.ndarray
    metrics: RegressionMetrics


def train_model(training_set: DataFrame, config: TrainingConfig) -> TrainedModel:
    """Split by trip_id, fit on the training rows and evaluate on the held-out rows.

    One Spark job collects both parts (no cache: serverless compute has none).
    """
    frame = to_model_frame(training_set, is_holdout(config.test_size).alias(_HOLDOUT))
    held_out = frame.pop(_HOLDOUT).to_numpy(dtype=bool)
    train, holdout = frame[~held_out].reset_index(drop=True), frame[held_out].reset_index(drop=True)
    if len(train) < 2 or holdout.empty:
        raise TrainingSetError(
            f"too few rows to train and evaluate: {len(train)} training and {len(holdout)} held-out rows"
        )
    pipeline = build_pipeline(config).fit(train[MODEL_INPUT_COLUMNS], train[LABEL])
    predictions = pipeline.predict(holdout[MODEL_INPUT_COLUMNS])
    metrics = regression_metrics(holdout[LABEL].to_numpy(), predictions)
    log.info("trained on %d rows; held-out %s", len(train), metrics)
    return TrainedModel(pipeline, config, train, holdout, predictions, metrics)
