"""The Databricks implementation: job / notebook Spark, Unity Catalog, workspace MLflow."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.bundle.deployment import DeployedJobs, DeploymentError, find_deployment
from mlops_template.platform.base import Platform
from mlops_template.platform.feature_store import DatabricksFeatureStore, FeatureStore
from mlops_template.platform.names import split_name
from mlops_template.platform.task_values import DatabricksTaskValues

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


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

    def deployed_jobs(self, target: str | None = None) -> DeployedJobs:
        """The jobs of the deployment whose synced files hold the working directory (metadata.json,
        then `jobs.get`): their settings carry every resolved value, `--var` ones included."""
        from databricks.sdk import WorkspaceClient

        deployment = find_deployment(Path.cwd())
        if deployment is None:
            raise DeploymentError(
                f"{Path.cwd()} is not in the files of a bundle deployment: deploy the bundle "
                "(`databricks bundle deploy -t TARGET`) and run the notebook from its files, "
                "`${workspace.file_path}` (default `${workspace.root_path}/files`)"
            )
        if target not in (None, deployment.target):
            raise DeploymentError(
                f"these files were deployed for target {deployment.target}, not {target}: run the "
                f"notebook from the files of the {target} deployment"
            )
        return deployment.deployed_jobs(WorkspaceClient())

    def configure_mlflow(self) -> None:
        import mlflow

        mlflow.set_tracking_uri("databricks")
        mlflow.set_registry_uri("databricks-uc")

    def experiment_id(self, experiment_name: str) -> str:
        import mlflow

        self.configure_mlflow()
        return mlflow.set_experiment(experiment_name).experiment_id


def _databricks_spark() -> SparkSession:
    """The runtime's session in a job or notebook; Databricks Connect from a laptop."""
    if "DATABRICKS_RUNTIME_VERSION" in os.environ:
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate()
    from databricks.connect import DatabricksSession  # the `connect` extra

    return DatabricksSession.builder.serverless().getOrCreate()
