"""Score prepared rows with a registered model version through `mlflow.pyfunc.spark_udf`.

Each row gets `prediction`: the predicted value, or for a binary classifier the probability of
label 1 (the logged model returns one probability per class), with `predicted_label` at the
spec's classification threshold. A model logged with its feature lookups looks its features up
itself (the feature store's `score_batch`: `fe.score_batch` on Databricks), so its rows need only
the keys and request inputs; any other model is given rows that carry every model input.
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

from mlops_template.platform.feature_store import FeatureStore
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


def _scoring_columns(spec: ProblemSpec, *, looked_up: bool) -> list[str]:
    """The row keys, then what the model takes from the rows: the request inputs when it looks its
    features up, else every input."""
    inputs = spec.request_input_names if looked_up else spec.input_names
    return list(dict.fromkeys([*key_columns(spec), *inputs]))


def check_scoring_input(rows: DataFrame, spec: ProblemSpec, *, looked_up: bool = False) -> None:
    """Fail naming the columns the model and the predictions table need but `rows` lacks."""
    missing = [c for c in _scoring_columns(spec, looked_up=looked_up) if c not in rows.columns]
    if missing:
        joined = "" if looked_up else " joined with the feature tables (training.dataset.build_feature_set)"
        raise ValueError(
            f"the rows to score lack the columns {missing}: score rows of the prepare_data table{joined}"
        )


def _result_type(spec: ProblemSpec) -> str:
    """What the logged model returns per row: a value, or a classifier's per-class probabilities."""
    return "array<double>" if spec.is_classifier else "double"


def _predict(rows: DataFrame, model: ScoringModel, spec: ProblemSpec) -> DataFrame:
    """The row keys with the model's `prediction`, `rows` carrying every model input."""
    udf = mlflow.pyfunc.spark_udf(
        rows.sparkSession, model.uri, result_type=_result_type(spec), env_manager="local"
    )
    return rows.select(*key_columns(spec), udf(F.struct(*input_columns(spec))).alias(PREDICTION))


def _predict_with_lookups(
    rows: DataFrame, model: ScoringModel, spec: ProblemSpec, feature_store: FeatureStore
) -> DataFrame:
    """The row keys with the `prediction` of a model that looks its features up as of each row."""
    request = rows.select(*_scoring_columns(spec, looked_up=True))
    scored = feature_store.score_batch(model_uri=model.uri, df=request, result_type=_result_type(spec))
    return scored.select(*key_columns(spec), PREDICTION)


def _as_probability(scored: DataFrame, spec: ProblemSpec) -> DataFrame:
    """A classifier's per-class probabilities (computed once, in their own projection) reduced to
    the probability of label 1 (the classes are [0, 1]), with `predicted_label`; a regressor's
    predictions as they are."""
    if not spec.is_classifier:
        return scored
    probability = F.element_at(F.col(PREDICTION), 2)
    return scored.withColumn(PREDICTION, probability).withColumn(
        PREDICTED_LABEL, (F.col(PREDICTION) >= F.lit(spec.classification_threshold)).cast("int")
    )


def score(
    rows: DataFrame,
    model: ScoringModel,
    scored_at: dt.datetime,
    spec: ProblemSpec,
    feature_store: FeatureStore | None = None,
) -> DataFrame:
    """One prediction per row with the row's keys and the model that made it. With `feature_store`
    the model (logged with its lookups) looks its features up there as of each row, and `rows` need
    only the keys and request inputs; without, `rows` carry every model input."""
    check_scoring_input(rows, spec, looked_up=feature_store is not None)
    if feature_store is None:
        scored = _predict(rows, model, spec)
    else:
        scored = _predict_with_lookups(rows, model, spec, feature_store)
    return _as_probability(scored, spec).select(
        "*",
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
        F.lit(model.alias).alias("model_alias"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )
