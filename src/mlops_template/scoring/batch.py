"""Score trips with a registered model version through `mlflow.pyfunc.spark_udf`."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mlops_template.features.columns import MODEL_INPUT_COLUMNS

log = logging.getLogger(__name__)

PREDICTION = "prediction"
PREDICTION_KEYS = ["trip_id"]
TRIP_KEY_COLUMNS = ["trip_id", "tpep_pickup_datetime", "pickup_zip", "dropoff_zip"]


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


def check_scoring_input(rows: DataFrame) -> None:
    """Fail naming the columns the model and the predictions table need but `rows` lacks."""
    missing = [c for c in [*TRIP_KEY_COLUMNS, *MODEL_INPUT_COLUMNS] if c not in rows.columns]
    if missing:
        raise ValueError(
            f"the rows to score lack the columns {missing}: score trips from the prepare_data table "
            "joined with the feature tables (features.lookups.build_feature_set)"
        )


def model_inputs(rows: DataFrame) -> Column:
    """The model's input columns, in signature order, as doubles (nulls stay null -> NaN)."""
    return F.struct(*[F.col(name).cast("double").alias(name) for name in MODEL_INPUT_COLUMNS])


def score(rows: DataFrame, model: ScoringModel, scored_at: dt.datetime) -> DataFrame:
    """One prediction per row with the trip keys and the model that made it."""
    check_scoring_input(rows)
    predict = mlflow.pyfunc.spark_udf(rows.sparkSession, model.uri, result_type="double", env_manager="local")
    return rows.select(
        *TRIP_KEY_COLUMNS,
        predict(model_inputs(rows)).alias(PREDICTION),
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
        F.lit(model.alias).alias("model_alias"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    )
