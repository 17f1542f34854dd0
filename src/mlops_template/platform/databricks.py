"""The Databricks implementation: job / notebook Spark, Unity Catalog, workspace MLflow."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import mlflow

from mlops_template.platform.base import Platform
from mlops_template.platform.feature_store import DatabricksFeatureStore, FeatureStore
from mlops_template.platform.names import split_name
from mlops_template.platform.task_values import DatabricksTaskValues

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mlops_template.monitoring.quality_monitor import QualityMonitors
    from mlops_template.serving.deploy import EndpointDeployer


def on_databricks() -> bool:
    """True inside a Databricks job or notebook, or when Databricks Connect is asked for."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ or os.environ.get("MLOPS_PLATFORM") == "databricks"


class DatabricksPlatform(Platform):
    """Runs on a workspace: the names are Unity Catalog's own."""

    name = "databricks"

    def __init__(self) -> None:
        self.task_values = DatabricksTaskValues()
        self._spark: SparkSession | None = None
        self._feature_store: FeatureStore | None = None

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = _databricks_spark()
        return self._spark

    @property
    def feature_store(self) -> FeatureStore:
        if self._feature_store is None:
            self._feature_store = DatabricksFeatureStore()
        return self._feature_store

    def table_name(self, name: str) -> str:
        split_name(name)
        return name

    def ensure_schema(self, name: str) -> None:
        """The bundle's `schemas` resource creates the schema at deploy time."""
        split_name(name)

    def merge_table(self, df: DataFrame, name: str, keys: Sequence[str]) -> None:
        """A Delta MERGE: matched rows updated, new rows inserted, in one transaction."""
        if not self.table_exists(name):
            self.save_table(df, name)
            return
        source = f"mlops_merge_source_{uuid.uuid4().hex}"
        df.createOrReplaceTempView(source)
        condition = " AND ".join(f"t.`{key}` <=> s.`{key}`" for key in keys)
        self.spark.sql(
            f"MERGE INTO {name} t USING {source} s ON {condition} "
            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )

    def endpoint_deployer(self, *, ready_timeout: timedelta | None = None) -> EndpointDeployer:
        from mlops_template.serving.deploy import DatabricksEndpointDeployer

        return DatabricksEndpointDeployer(timeout=ready_timeout)

    def quality_monitors(self) -> QualityMonitors:
        from mlops_template.monitoring.quality_monitor import DatabricksQualityMonitors

        return DatabricksQualityMonitors()

    def configure_mlflow(self) -> None:
        mlflow.set_tracking_uri("databricks")
        mlflow.set_registry_uri("databricks-uc")

    def experiment_id(self, experiment_name: str) -> str:
        self.configure_mlflow()
        return mlflow.set_experiment(experiment_name).experiment_id


def _databricks_spark() -> SparkSession:
    """The runtime's session in a job or notebook; Databricks Connect from a laptop."""
    if "DATABRICKS_RUNTIME_VERSION" in os.environ:
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate()
    from databricks.connect import DatabricksSession  # the `connect` extra

    return DatabricksSession.builder.serverless().getOrCreate()
