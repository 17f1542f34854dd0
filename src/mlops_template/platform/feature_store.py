"""Feature tables with primary and timestamp keys, and point-in-time training sets.

On Databricks this is `FeatureEngineeringClient` (Unity Catalog feature tables); locally
`LocalFeatureStore` (platform/local_feature_store.py) gives the same semantics over Spark tables.
Both accept the same `databricks.feature_engineering.FeatureLookup` objects.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from databricks.feature_engineering import FeatureLookup
    from mlflow.models import Model
    from mlflow.models.model import ModelInfo
    from mlflow.pyfunc import PyFuncModel
    from pyspark.sql import DataFrame

# The key of a local model's MLmodel `metadata` that records its feature lookups (Databricks keeps
# them in the model's `data/feature_store/feature_spec.yaml`, written by `fe.log_model`).
FEATURE_LOOKUPS_METADATA = "feature_lookups"
# The pyfunc loader of models logged with `fe.log_model` (databricks/feature_store/mlflow_model.py)
# and where such a model keeps the model it wraps (ml_features constants MODEL_DATA_PATH_ROOT and
# mlflow_model_constants.RAW_MODEL_FOLDER, under the pyfunc `data` directory).
FEATURE_STORE_LOADER = "databricks.feature_store.mlflow_model"
RAW_MODEL_PATH = Path("data", "feature_store", "raw_model")


# The smallest capacity `create_online_store` accepts ("CU_1", "CU_2", "CU_4", "CU_8"), and how long
# a new store may take to become AVAILABLE.
ONLINE_STORE_CAPACITY = "CU_1"
ONLINE_STORE_WAIT = dt.timedelta(minutes=30)
ONLINE_STORE_POLL_SECONDS = 20


def online_table_name(source_table_name: str) -> str:
    """The online table a feature table is published to: `<catalog>.<schema>.<table>_online`."""
    return f"{source_table_name}_online"


class FeatureLookupError(ValueError):
    """A feature lookup the serving path cannot describe (e.g. no explicit feature names)."""


@dataclass(frozen=True)
class LookupSpec:
    """One `FeatureLookup` as plain data: what a served model looks up, by which request columns."""

    table_name: str  # catalog.schema.table: the offline feature table
    lookup_key: tuple[str, ...]  # request columns, in the order of the table's entity keys
    timestamp_lookup_key: str | None  # request column holding the lookup time
    features: tuple[tuple[str, str], ...]  # (column of the table, output column)
    default_values: Mapping[str, Any]  # output column -> value when no usable row
    lookback_seconds: float | None

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(output for _, output in self.features)

    @classmethod
    def of(cls, lookup: FeatureLookup) -> LookupSpec:
        """The description of `lookup`, which must name its features (the served contract)."""
        names = lookup.feature_names
        if not names:
            raise FeatureLookupError(
                f"the lookup of {lookup.table_name} names no feature_names: list them, so the model's "
                "inputs do not change when the table gains a column"
            )
        keys = [lookup.lookup_key] if isinstance(lookup.lookup_key, str) else list(lookup.lookup_key)
        window = lookup.lookback_window
        return cls(
            table_name=lookup.table_name,
            lookup_key=tuple(keys),
            timestamp_lookup_key=lookup.timestamp_lookup_key,
            features=tuple((name, lookup._get_output_name(name)) for name in names),
            default_values=dict(lookup.default_values or {}),
            lookback_seconds=None if window is None else window.total_seconds(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "table_name": self.table_name,
            "lookup_key": list(self.lookup_key),
            "timestamp_lookup_key": self.timestamp_lookup_key,
            "features": [list(pair) for pair in self.features],
            "default_values": dict(self.default_values),
            "lookback_seconds": self.lookback_seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LookupSpec:
        return cls(
            table_name=data["table_name"],
            lookup_key=tuple(data["lookup_key"]),
            timestamp_lookup_key=data.get("timestamp_lookup_key"),
            features=tuple((column, output) for column, output in data["features"]),
            default_values=dict(data.get("default_values") or {}),
            lookback_seconds=data.get("lookback_seconds"),
        )

    def to_feature_lookup(self) -> FeatureLookup:
        """The `FeatureLookup` this describes (for point-in-time joins of scoring rows)."""
        from databricks.feature_engineering import FeatureLookup

        renamed = {column: output for column, output in self.features if column != output}
        seconds = self.lookback_seconds
        return FeatureLookup(
            table_name=self.table_name,
            lookup_key=list(self.lookup_key),
            timestamp_lookup_key=self.timestamp_lookup_key,
            feature_names=[column for column, _ in self.features],
            rename_outputs=renamed or None,
            default_values=dict(self.default_values) or None,
            lookback_window=None if seconds is None else dt.timedelta(seconds=seconds),
        )


def load_model_over_features(model_uri: str) -> PyFuncModel:
    """The model as a pyfunc over every model input, features included, with no lookup: a model
    logged with `fe.log_model` keeps that raw model under `data/feature_store/raw_model` (its pyfunc
    looks features up with Spark instead, databricks/feature_store/mlflow_model.py); others are it."""
    import mlflow

    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    raw = path / RAW_MODEL_PATH
    return mlflow.pyfunc.load_model(str(raw if (raw / "MLmodel").exists() else path))


def model_lookups(model: Model) -> list[LookupSpec]:
    """The feature lookups recorded in a local model's metadata; [] for a model without."""
    recorded = (model.metadata or {}).get(FEATURE_LOOKUPS_METADATA) or []
    return [LookupSpec.from_dict(item) for item in recorded]


class TrainingSet(Protocol):
    """What `create_training_set` returns (as Databricks' TrainingSet does)."""

    def load_df(self) -> DataFrame: ...


class FeatureStore(Protocol):
    """Feature tables keyed by entity and time, the models that look them up, and their online copy."""

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

    def log_model(
        self, *, model: Any, name: str, flavor: ModuleType, training_set: TrainingSet, **kwargs: Any
    ) -> ModelInfo:
        """Log `model` with the feature lookups of `training_set`, so scoring and serving look its
        features up from request keys; `kwargs` go to the flavor's `save_model`."""

    def logged_with_lookups(self, model_uri: str) -> bool:
        """Whether the model at `model_uri` was logged with `log_model` (looks its features up)."""

    def score_batch(self, *, model_uri: str, df: DataFrame, result_type: str) -> DataFrame:
        """`df` with a `prediction` column, the model's features looked up as of each row."""

    def publish_table(self, *, source_table_name: str, online_store: str) -> None:
        """Copy the latest row per key of a feature table to the online store serving reads."""


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

    def log_model(
        self, *, model: Any, name: str, flavor: ModuleType, training_set: TrainingSet, **kwargs: Any
    ) -> ModelInfo:
        """`fe.log_model`: the model wrapped with its feature spec. The client derives the inputs
        of the signature (the training set's source columns required, its features optional) and,
        asked to, the input example from the training set's first rows; the outputs are those of
        the `signature` given (`output_schema`, which fe.log_model documents)."""
        signature = kwargs.pop("signature", None)
        kwargs.pop("input_example", None)
        if signature is not None:  # the model's own outputs (a classifier's probabilities), not the label's
            kwargs["output_schema"] = signature.outputs
        return self._client.log_model(
            model=model,
            artifact_path=name,
            flavor=flavor,
            training_set=training_set,
            infer_input_example=True,
            **kwargs,
        )

    def logged_with_lookups(self, model_uri: str) -> bool:
        import mlflow

        flavors = mlflow.models.get_model_info(model_uri).flavors
        return flavors.get("python_function", {}).get("loader_module") == FEATURE_STORE_LOADER

    def score_batch(self, *, model_uri: str, df: DataFrame, result_type: str) -> DataFrame:
        return self._client.score_batch(model_uri=model_uri, df=df, result_type=result_type)

    def publish_table(self, *, source_table_name: str, online_store: str) -> None:
        """Publish to the Databricks Online Feature Store `online_store` (created on first use, then
        awaited until AVAILABLE) as `<table>_online` in SNAPSHOT mode (TRIGGERED / CONTINUOUS need
        Change Data Feed on the feature table). The sync runs after this returns."""
        store = self._available_online_store(online_store)
        self._client.publish_table(
            online_store=store,
            source_table_name=source_table_name,
            online_table_name=online_table_name(source_table_name),
            publish_mode="SNAPSHOT",
        )

    def _available_online_store(self, name: str) -> Any:
        """The online store `name`, created when missing (another run creating it at the same time
        is fine), once it is AVAILABLE: a new store starts for several minutes."""
        from databricks.sdk.errors import AlreadyExists

        store = self._client.get_online_store(name=name)
        if store is None:
            try:
                store = self._client.create_online_store(name=name, capacity=ONLINE_STORE_CAPACITY)
            except AlreadyExists:
                store = self._client.get_online_store(name=name)
        deadline = time.monotonic() + ONLINE_STORE_WAIT.total_seconds()
        while store is None or getattr(store.state, "value", store.state) != "AVAILABLE":
            if time.monotonic() > deadline:
                state = None if store is None else store.state
                raise TimeoutError(
                    f"online store {name} is {state} after {ONLINE_STORE_WAIT}: check it in the workspace "
                    "(its Lakebase instance), then run publish_features again"
                )
            time.sleep(ONLINE_STORE_POLL_SECONDS)
            store = self._client.get_online_store(name=name)
        return store

    def _exists(self, name: str) -> bool:
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient().tables.exists(full_name=name).table_exists
