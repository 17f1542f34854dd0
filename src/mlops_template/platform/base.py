"""The platform interface: everything a job task may need to know about where it runs."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlops_template.platform.feature_store import FeatureStore
from mlops_template.platform.names import split_name
from mlops_template.platform.task_values import TaskValues

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mlops_template.bundle.deployment import DeployedJobs

log = logging.getLogger(__name__)


class MissingTableError(LookupError):
    """A table a task reads does not exist; the message says what to run first."""


class Platform(ABC):
    """Spark, table names, MLflow and task values for one place of execution."""

    name: str
    task_values: TaskValues

    @property
    @abstractmethod
    def spark(self) -> SparkSession:
        """The Spark session every task of this process shares."""

    @abstractmethod
    def table_name(self, name: str) -> str:
        """The name Spark knows a Unity Catalog `catalog.schema.table` by here."""

    @abstractmethod
    def ensure_schema(self, name: str) -> None:
        """Make sure the schema of table `name` exists (locally: create its database)."""

    @property
    @abstractmethod
    def feature_store(self) -> FeatureStore:
        """Feature tables with primary / timestamp keys and point-in-time training sets."""

    @abstractmethod
    def configure_mlflow(self) -> None:
        """Point MLflow tracking and registry at this platform's stores."""

    @abstractmethod
    def experiment_id(self, experiment_name: str) -> str:
        """The id of the named MLflow experiment, created when missing."""

    @abstractmethod
    def merge_table(self, df: DataFrame, name: str, keys: Sequence[str]) -> None:
        """Upsert `df` into table `name` by `keys` (created when missing); other rows are kept."""

    @abstractmethod
    def deployed_jobs(self, target: str | None = None) -> DeployedJobs:
        """The bundle target's jobs as deployed, whose task parameters name what a notebook reads.

        On Databricks: the deployment whose synced files the notebook runs from (another `target`
        is refused). Locally: databricks.yml resolved for `target`.
        """

    def _provide_missing_table(self, name: str) -> bool:
        """Hook: create a well-known table that is missing; True if it now exists."""
        return False

    def table_exists(self, name: str) -> bool:
        """Whether the Unity Catalog table `name` exists."""
        return self.spark.catalog.tableExists(self.table_name(name))

    def read_table(self, name: str, *, produced_by: str | None = None) -> DataFrame:
        """Read a table, or fail saying what produces it."""
        split_name(name)
        if not self.table_exists(name) and not self._provide_missing_table(name):
            hint = f" Run {produced_by} first." if produced_by else ""
            raise MissingTableError(f"Table {name} does not exist on the {self.name} platform.{hint}")
        return self.spark.table(self.table_name(name))

    def save_table(self, df: DataFrame, name: str, *, mode: str = "overwrite") -> None:
        """Write a managed table (Delta on Databricks, Spark's default format locally)."""
        self.ensure_schema(name)
        (df.write.mode(mode).option("overwriteSchema", "true").saveAsTable(self.table_name(name)))
        log.info("wrote table %s", name)
