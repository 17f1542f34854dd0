"""Feature tables with primary and timestamp keys, and point-in-time training sets.

On Databricks this is `FeatureEngineeringClient` (Unity Catalog feature tables); locally
`LocalFeatureStore` (platform/local_feature_store.py) gives the same semantics over Spark tables.
Both accept the same `databricks.feature_engineering.FeatureLookup` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from databricks.feature_engineering import FeatureLookup
    from pyspark.sql import DataFrame


class TrainingSet(Protocol):
    """What `create_training_set` returns (as Databricks' TrainingSet does)."""

    def load_df(self) -> DataFrame: ...


class FeatureStore(Protocol):
    """Feature tables keyed by entity and time."""

    def write_table(
        self, name: str, df: DataFrame, *, primary_keys: Sequence[str], timestamp_key: str, description: str
    ) -> None:
        """Create the feature table when missing, else merge `df` into it by primary key."""

    def create_training_set(
        self,
        df: DataFrame,
        feature_lookups: Sequence[FeatureLookup],
        label: str | None,
        exclude_columns: Sequence[str] = (),
    ) -> TrainingSet:
        """Join each row of `df` with the features of its keys as of its lookup time."""


class DatabricksFeatureStore:
    """Unity Catalog feature tables through the Feature Engineering client."""

    def __init__(self) -> None:
        from databricks.feature_engineering import FeatureEngineeringClient

        self._client = FeatureEngineeringClient()

    def write_table(
        self, name: str, df: DataFrame, *, primary_keys: Sequence[str], timestamp_key: str, description: str
    ) -> None:
        if self._exists(name):
            self._client.write_table(name=name, df=df, mode="merge")
            return
        self._client.create_table(
            name=name,
            primary_keys=list(primary_keys),
            timestamp_keys=[timestamp_key],
            df=df,
            description=description,
        )

    def create_training_set(
        self,
        df: DataFrame,
        feature_lookups: Sequence[FeatureLookup],
        label: str | None,
        exclude_columns: Sequence[str] = (),
    ) -> Any:
        return self._client.create_training_set(
            df=df, feature_lookups=list(feature_lookups), label=label, exclude_columns=list(exclude_columns)
        )

    def _exists(self, name: str) -> bool:
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient().tables.exists(full_name=name).table_exists
