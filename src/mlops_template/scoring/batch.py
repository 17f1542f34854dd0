"""Score prepared rows with a registered model version through `mlflow.pyfunc.spark_udf`.

Each row gets `prediction`: the predicted value, or for a binary classifier the probability of
label 1 (the logged model returns one probability per class), with `predicted_label` at the
spec's classification threshold.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mlops_template.problem_spec import ProblemSpec
from mlops_template.training.model import input_columns

log = logging.getLogger(__name__)

PREDICTION = "prediction"
PREDICTED_LABEL = "predicted_label"


def key_columns(spec: ProblemSpec) -> list[str]:
    """The columns that identify a scored row in the predictions table: row id, time, entity keys."""
    return [spec.row_id, spec.event_timestamp, *spec.entity_keys]


class NoModelVersionError(LookupError):
    """The alias to score with points at no model version yet."""


@dataclass(frozen=True)
class ScoringModel:
    """The model version an alias resolved to when the batch started."""

    name: str
    alias: str
    version: int

    @property
    def uri(self) -> str:
        """A version URI, so every row of the batch is scored by the same version."""
        return f"models:/{self.name}/{self.version}"


def resolve_alias(model_name: str, alias: str) -> ScoringModel:
    """The version `alias` points at, or an error saying what to run first."""
    try:
        version = MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException as error:
        raise NoModelVersionError(
            f"model {model_name} has no version with alias '{alias}' in {mlflow.get_registry_uri()}: "
            "run the pipeline job (train and validate_model) first"
        ) from error
    return ScoringModel(model_name, alias, int(version.version))


def check_scoring_input(rows: DataFrame, spec: ProblemSpec) -> None:
    """Fail naming the columns the model and the predictions table need but `rows` lacks."""
    missing = [c for c in [*key_columns(spec), *spec.input_names] if c not in rows.columns]
    if missing:
        raise ValueError(
            f"the rows to score lack the columns {missing}: score rows of the prepare_data table "
            "joined with the feature tables (training.dataset.build_feature_set)"
        )


def _predict(rows: DataFrame, model: ScoringModel, spec: ProblemSpec) -> DataFrame:
    """The row keys with `prediction` (and for a classifier `predicted_label`) of the model.

    A classifier's per-class probabilities are computed once, in their own projection, then
    reduced to the probability of label 1 (the classes are [0, 1]).
    """
    result_type = "array<double>" if spec.is_classifier else "double"
    udf = mlflow.pyfunc.spark_udf(rows.sparkSession, model.uri, result_type=result_type, env_manager="local")
    scored = rows.select(*key_columns(spec), udf(F.struct(*input_columns(spec))).alias(PREDICTION))
    if not spec.is_classifier:
        return scored
    probability = F.element_at(F.col(PREDICTION), 2)
    return scored.withColumn(PREDICTION, probability).withColumn(
        PREDICTED_LABEL, (F.col(PREDICTION) >= F.lit(spec.classification_threshold)).cast("int")
    )


def score(rows: DataFrame, model: ScoringModel, scored_at: dt.datetime, spec: ProblemSpec) -> DataFrame:
    """One prediction per row with the row's keys and the model that made it."""
    check_scoring_input(rows, spec)
    return _predict(rows, model, spec).select(
        "*",
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
        F.lit(model.alias).alias("model_alias"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )
