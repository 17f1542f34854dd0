"""Feature tables, point-in-time training sets, models that look features up, and the online copy,
over local Spark tables.

A feature table is a managed Spark table whose primary keys and timestamp key are recorded as
table properties, so they live in the metastore with the table, as Unity Catalog keeps them.
Writes create the table or merge by primary key; `create_training_set` accepts the same
`databricks.feature_engineering.FeatureLookup` objects as Databricks and joins each row with the
latest feature row of its key at or before its lookup time, within the lookback window.

`log_model` logs a model as `fe.log_model` does, with its lookups recorded in the MLmodel
metadata (`FEATURE_LOOKUPS_METADATA`); `score_batch` looks them up as of each row (the same join)
and predicts; `publish_table` writes the latest row per key to the local online store
(platform/online_store.py), which the local endpoint reads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mlops_laptop.platform.online_store import write_snapshot
from mlops_template.platform.base import MissingTableError
from mlops_template.platform.feature_store import FEATURE_LOOKUPS_METADATA, LookupSpec, model_lookups

if TYPE_CHECKING:
    import pandas as pd
    from databricks.feature_engineering import FeatureLookup
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from pyspark.sql import SparkSession

    from mlops_laptop.platform.local import LocalPlatform
    from mlops_template.platform.feature_store import TrainingSet

log = logging.getLogger(__name__)

PRIMARY_KEYS_PROPERTY = "mlops.feature_store.primary_keys"
TIMESTAMP_KEY_PROPERTY = "mlops.feature_store.timestamp_key"
FEATURE_JOB = "the feature job (task features of job pipeline)"

# Working columns of the as-of join; the prefix keeps them apart from user columns.
_KEY = "__fs_key_"
_TIME = "__fs_time"
_KIND = "__fs_kind"  # 0 = feature row, 1 = row to enrich: features sort first at equal times
_ROW = "__fs_row"
_MATCH = "__fs_match"
_MATCH_TIME = "__fs_ts"


class FeatureStoreError(ValueError):
    """A write or lookup that does not fit a feature table's keys or features."""


@dataclass(frozen=True)
class FeatureTable:
    """What the metastore records about a feature table."""

    name: str
    primary_keys: tuple[str, ...]
    timestamp_key: str

    @property
    def entity_keys(self) -> list[str]:
        """The primary keys other than the timestamp key: what `lookup_key` matches."""
        return [key for key in self.primary_keys if key != self.timestamp_key]


PREDICTION = "prediction"  # the column score_batch adds (as fe.score_batch)


@dataclass(frozen=True)
class LocalTrainingSet:
    """The result of `create_training_set`, loaded as Databricks' TrainingSet is, with what
    `log_model` records: the lookups, the label, the source columns of the DataFrame (neither
    label nor excluded) and the feature columns the lookups added."""

    df: DataFrame
    feature_lookups: tuple[FeatureLookup, ...]
    label: str | None
    source_columns: tuple[str, ...]
    feature_columns: tuple[str, ...]

    def load_df(self) -> DataFrame:
        return self.df


def _col(name: str) -> Column:
    """A top-level column by its literal name (dots are not struct paths)."""
    return F.col("`" + name.replace("`", "``") + "`")


class LocalFeatureStore:
    """Feature tables with recorded keys, merge writes and as-of lookups on a LocalPlatform."""

    def __init__(self, platform: LocalPlatform) -> None:
        self._platform = platform

    @property
    def _spark(self) -> SparkSession:
        return self._platform.spark

    def get_table(self, name: str) -> FeatureTable:
        """The recorded keys of feature table `name`."""
        table = self._find_table(name)
        if table is None:
            raise MissingTableError(f"Feature table {name} does not exist. Run {FEATURE_JOB} first.")
        return table

    def write_table(
        self, name: str, df: DataFrame, *, primary_keys: Sequence[str], timestamp_key: str, description: str
    ) -> None:
        keys = tuple(primary_keys)
        _check_key_columns(name, df, keys, timestamp_key)
        recorded = self._find_table(name)
        if recorded is not None and (recorded.primary_keys, recorded.timestamp_key) != (keys, timestamp_key):
            raise FeatureStoreError(
                f"feature table {name} has primary keys {list(recorded.primary_keys)} and timestamp key "
                f"'{recorded.timestamp_key}'; this write uses {list(keys)} and '{timestamp_key}'. Keys "
                "cannot change: write to a new table or drop this one."
            )
        df = df.persist()  # checked, then written: compute it once
        try:
            _check_unique_keys(name, df, keys)
            if recorded is None:
                self._create(name, df, keys, timestamp_key, description)
            else:
                self._merge(recorded, df)
        finally:
            df.unpersist()

    def create_training_set(
        self,
        df: DataFrame,
        feature_lookups: Sequence[FeatureLookup],
        label: str | None,
        exclude_columns: Sequence[str] = (),
    ) -> LocalTrainingSet:
        tables = {
            lookup.table_name: (
                self.get_table(lookup.table_name),
                self._platform.read_table(lookup.table_name, produced_by=FEATURE_JOB),
            )
            for lookup in feature_lookups
        }
        joined = point_in_time_join(df, feature_lookups, tables, label, exclude_columns)
        inputs = [column for column in joined.columns if column != label]
        return LocalTrainingSet(
            joined,
            tuple(feature_lookups),
            label,
            source_columns=tuple(column for column in inputs if column in df.columns),
            feature_columns=tuple(column for column in inputs if column not in df.columns),
        )

    def log_model(
        self, *, model: Any, name: str, flavor: ModuleType, training_set: TrainingSet, **kwargs: Any
    ) -> ModelInfo:
        """`flavor.log_model` with the signature `fe.log_model` gives a model of a training set
        (source columns required, features optional, types of the training set; outputs of the
        `signature` given) and the lookups recorded in the MLmodel metadata."""
        if not isinstance(training_set, LocalTrainingSet):
            raise FeatureStoreError(
                "log_model needs the training set create_training_set returned, got "
                f"{type(training_set).__name__}"
            )
        given: ModelSignature | None = kwargs.pop("signature", None)
        lookups = _recorded_lookups(training_set)
        metadata = {
            **kwargs.pop("metadata", {}),
            FEATURE_LOOKUPS_METADATA: [spec.to_dict() for spec in lookups],
        }
        signature = _lookup_signature(training_set, None if given is None else given.outputs)
        return flavor.log_model(model, name=name, signature=signature, metadata=metadata, **kwargs)

    def logged_with_lookups(self, model_uri: str) -> bool:
        from mlflow.models import Model

        return bool(model_lookups(Model.load(model_uri)))

    def score_batch(self, *, model_uri: str, df: DataFrame, result_type: str) -> DataFrame:
        """As fe.score_batch: `df`'s columns, then the model inputs it lacks (looked up as of each
        row; a feature column `df` has is used as given), then `prediction`."""
        import mlflow
        from mlflow.models import Model

        model = Model.load(model_uri)
        lookups = model_lookups(model)
        if model.signature is None:
            raise FeatureStoreError(f"model {model_uri} has no signature: log it with log_model")
        inputs = model.signature.inputs.input_names()
        _check_scoring_columns(df, lookups, [i.name for i in model.signature.inputs.inputs if i.required])
        tables = {
            spec.table_name: (
                self.get_table(spec.table_name),
                self._platform.read_table(spec.table_name, produced_by=FEATURE_JOB),
            )
            for spec in lookups
        }
        joined = point_in_time_join(df, [spec.to_feature_lookup() for spec in lookups], tables, label=None)
        udf = mlflow.pyfunc.spark_udf(
            df.sparkSession, model_uri, result_type=result_type, env_manager="local"
        )
        added = [column for column in inputs if column not in df.columns]
        return joined.select(
            *[_col(column) for column in [*df.columns, *added]],
            udf(F.struct(*[_col(column) for column in inputs])).alias(PREDICTION),
        )

    def publish_table(self, *, source_table_name: str, online_store: str) -> None:
        """The latest row of each entity key of the feature table, written as its snapshot in the
        local online store (`online_store` names the Databricks store; locally there is one)."""
        table = self.get_table(source_table_name)
        rows = self._platform.read_table(source_table_name, produced_by=FEATURE_JOB)
        newest_first = Window.partitionBy(*[_col(key) for key in table.entity_keys]).orderBy(
            _col(table.timestamp_key).desc()
        )
        latest = rows.withColumn(_ROW, F.row_number().over(newest_first)).where(F.col(_ROW) == 1).drop(_ROW)
        frame = _typed_pandas(latest)
        path = write_snapshot(
            self._platform.state_dir, source_table_name, frame, table.entity_keys, table.timestamp_key
        )
        log.info(
            "published %d keys of %s to the local online store (Databricks: online store %s): %s",
            len(frame),
            source_table_name,
            online_store,
            path,
        )

    def _find_table(self, name: str) -> FeatureTable | None:
        if not self._platform.table_exists(name):
            return None
        rows = self._spark.sql(f"SHOW TBLPROPERTIES {self._platform.table_name(name)}").collect()
        properties = {row["key"]: row["value"] for row in rows}
        if PRIMARY_KEYS_PROPERTY not in properties:
            raise FeatureStoreError(
                f"table {name} exists but is not a feature table (no recorded primary keys): "
                "drop it or write the features under another name"
            )
        return FeatureTable(
            name, tuple(json.loads(properties[PRIMARY_KEYS_PROPERTY])), properties[TIMESTAMP_KEY_PROPERTY]
        )

    def _create(
        self, name: str, df: DataFrame, keys: tuple[str, ...], timestamp_key: str, description: str
    ) -> None:
        """CREATE TABLE AS SELECT with the keys as properties: one statement, so all or nothing."""
        self._platform.ensure_schema(name)
        (
            df.writeTo(self._platform.table_name(name))
            .using(self._spark.conf.get("spark.sql.sources.default"))
            .tableProperty(PRIMARY_KEYS_PROPERTY, json.dumps(list(keys)))
            .tableProperty(TIMESTAMP_KEY_PROPERTY, timestamp_key)
            .tableProperty("comment", description)
            .create()
        )
        log.info("created feature table %s with primary keys %s", name, list(keys))

    def _merge(self, table: FeatureTable, df: DataFrame) -> None:
        """Rows of `df` replace the rows with the same primary key; other rows are kept."""
        existing = self._platform.read_table(table.name)
        self._platform.merge_table(_conform(table.name, df, existing.schema), table.name, table.primary_keys)


def point_in_time_join(
    df: DataFrame,
    feature_lookups: Sequence[FeatureLookup],
    tables: Mapping[str, tuple[FeatureTable, DataFrame]],
    label: str | None,
    exclude_columns: Sequence[str] = (),
) -> DataFrame:
    """`create_training_set` over feature rows at hand: `tables` maps each lookup's `table_name`
    to the table's keys and its rows (so rows computed in memory are looked up as tables are)."""
    outputs: list[str] = []
    result = df
    for lookup in feature_lookups:
        table, features = tables[lookup.table_name]
        wanted = _lookup_outputs(lookup, table, features, df.columns)
        for output in wanted.values():
            if output in outputs:
                raise FeatureStoreError(
                    f"two feature lookups produce the column '{output}': rename one with rename_outputs"
                )
        outputs += wanted.values()
        if wanted:
            result = _lookup(result, lookup, table, features, wanted)
        # Databricks fills every null output, looked up or given, with the defaults
        # (`TrainingSet._augment_df`: `fillna(default_values)`, ml_features/entities/training_set.py).
        result = _fill_defaults(result, lookup.default_values)
    columns = _training_columns(df.columns, outputs, label, exclude_columns)
    return result.select(*[_col(column) for column in columns])


def _recorded_lookups(training_set: LocalTrainingSet) -> list[LookupSpec]:
    """The lookups as the model looks them up: only the features the training set has (fe.log_model
    leaves out excluded features and those the DataFrame gave)."""
    kept = set(training_set.feature_columns)
    specs = []
    for lookup in training_set.feature_lookups:
        spec = LookupSpec.of(lookup)
        features = tuple(pair for pair in spec.features if pair[1] in kept)
        if features:
            defaults = {k: v for k, v in spec.default_values.items() if k in {o for _, o in features}}
            specs.append(dataclasses.replace(spec, features=features, default_values=defaults))
    return specs


def _lookup_signature(training_set: LocalTrainingSet, outputs: Any) -> ModelSignature:
    """The input schema `fe.log_model` derives from a training set (`get_input_schema_from_feature_spec`
    in databricks/ml_features/utils/signature_utils.py: source columns required, features optional),
    with the Spark-to-MLflow types of that module."""
    from databricks.ml_features.utils.signature_utils import convert_spark_data_type_to_mlflow_signature_type
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    schema = training_set.df.schema
    columns = [(c, True) for c in training_set.source_columns] + [
        (c, False) for c in training_set.feature_columns
    ]
    specs = []
    for column, required in columns:
        spark_type = schema[column].dataType.simpleString()
        mlflow_type = convert_spark_data_type_to_mlflow_signature_type(spark_type)
        if mlflow_type is None:
            raise FeatureStoreError(
                f"log_model: column '{column}' of the training set is {spark_type}, which an MLflow "
                "signature cannot describe: cast it or exclude it"
            )
        specs.append(ColSpec(mlflow_type, column, required=required))
    return ModelSignature(inputs=Schema(specs), outputs=outputs)


def _check_scoring_columns(df: DataFrame, lookups: Sequence[LookupSpec], required: Sequence[str]) -> None:
    """What fe.score_batch checks first: no `prediction` column, and every lookup key and required
    (source) input present."""
    if PREDICTION in df.columns:
        raise FeatureStoreError(
            f"score_batch adds the column '{PREDICTION}'; the DataFrame already has one: rename it"
        )
    keys = [key for spec in lookups for key in (*spec.lookup_key, spec.timestamp_lookup_key) if key]
    needed = list(dict.fromkeys([*keys, *required]))
    if missing := [column for column in needed if column not in df.columns]:
        raise FeatureStoreError(
            f"the DataFrame to score lacks the columns {missing}: the model's lookup keys and request "
            f"inputs are {needed}"
        )


def _typed_pandas(df: DataFrame) -> pd.DataFrame:
    """`df` in pandas with integer and boolean columns nullable (Int64, boolean), so a null does
    not turn them into floats or objects."""
    frame = df.toPandas()
    for field in df.schema.fields:
        if isinstance(field.dataType, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
            frame[field.name] = frame[field.name].astype("Int64")
        elif isinstance(field.dataType, T.BooleanType):
            frame[field.name] = frame[field.name].astype("boolean")
    return frame


def _check_key_columns(name: str, df: DataFrame, keys: tuple[str, ...], timestamp_key: str) -> None:
    if timestamp_key not in keys:
        raise FeatureStoreError(
            f"feature table {name}: the timestamp key '{timestamp_key}' must be one of the primary keys "
            f"{list(keys)} (as in Unity Catalog)"
        )
    if missing := [key for key in keys if key not in df.columns]:
        raise FeatureStoreError(
            f"feature table {name}: primary key columns {missing} are not in the DataFrame"
        )
    time_type = df.schema[timestamp_key].dataType
    if not isinstance(time_type, T.TimestampType | T.TimestampNTZType | T.DateType):
        raise FeatureStoreError(
            f"feature table {name}: the timestamp key '{timestamp_key}' is {time_type.simpleString()}, "
            "expected a timestamp or date"
        )


def _check_unique_keys(name: str, df: DataFrame, keys: tuple[str, ...]) -> None:
    """Fail on a null or duplicate primary key, showing one offending key."""
    offending = (
        df.groupBy(*[_col(key) for key in keys])
        .agg(F.count(F.lit(1)).alias("rows"))
        .where(reduce(operator.or_, [_col(key).isNull() for key in keys], F.col("rows") > 1))
        .limit(1)
        .collect()
    )
    if not offending:
        return
    row = offending[0]
    example = {key: row[key] for key in keys}
    if any(value is None for value in example.values()):
        raise FeatureStoreError(
            f"feature table {name}: primary keys {list(keys)} may not be null, found {example}"
        )
    raise FeatureStoreError(
        f"feature table {name}: primary keys {list(keys)} must be unique in one write, "
        f"but {example} occurs {row['rows']} times"
    )


def _conform(name: str, df: DataFrame, schema: T.StructType) -> DataFrame:
    """`df` with the table's columns, in its order and types; other column sets are an error."""
    expected, actual = set(schema.fieldNames()), set(df.columns)
    if expected != actual:
        raise FeatureStoreError(
            f"feature table {name} has columns {sorted(expected)}; the DataFrame lacks "
            f"{sorted(expected - actual)} and adds {sorted(actual - expected)}"
        )
    return df.select(*[_col(field.name).cast(field.dataType).alias(field.name) for field in schema])


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _lookup_outputs(
    lookup: FeatureLookup, table: FeatureTable, features: DataFrame, input_columns: Sequence[str]
) -> dict[str, str]:
    """Feature name -> output column; as on Databricks, a column `df` already has is not looked up."""
    available = [column for column in features.columns if column not in table.primary_keys]
    names = lookup.feature_names or available
    if unknown := [name for name in names if name not in available]:
        raise FeatureStoreError(
            f"feature table {table.name} has no features {unknown}; its features are {available}"
        )
    outputs = {name: lookup._get_output_name(name) for name in names}
    if unknown := [key for key in lookup.default_values if key not in outputs.values()]:
        raise FeatureStoreError(
            f"default_values for {unknown}, which the lookup of {table.name} does not output: "
            f"{list(outputs.values())}"
        )
    return {name: output for name, output in outputs.items() if output not in input_columns}


def _lookup(
    df: DataFrame, lookup: FeatureLookup, table: FeatureTable, features: DataFrame, outputs: dict[str, str]
) -> DataFrame:
    """Check the lookup's keys against the table's, then join as of the lookup time."""
    lookup_keys = _as_list(lookup.lookup_key)
    if len(lookup_keys) != len(table.entity_keys):
        raise FeatureStoreError(
            f"feature table {table.name} is keyed by {table.entity_keys} (and timestamp "
            f"'{table.timestamp_key}'); the lookup gives {len(lookup_keys)} lookup keys {lookup_keys}"
        )
    if lookup.timestamp_lookup_key is None:
        raise FeatureStoreError(
            f"feature table {table.name} is a time series table (timestamp key '{table.timestamp_key}'): "
            "its FeatureLookup needs a timestamp_lookup_key"
        )
    pairs = [
        *zip(lookup_keys, table.entity_keys, strict=True),
        (lookup.timestamp_lookup_key, table.timestamp_key),
    ]
    for df_column, table_column in pairs:
        if df_column not in df.columns:
            raise FeatureStoreError(f"lookup of {table.name}: the DataFrame has no column '{df_column}'")
        df_type, table_type = df.schema[df_column].dataType, features.schema[table_column].dataType
        if df_type != table_type:
            raise FeatureStoreError(
                f"lookup of {table.name}: '{df_column}' is {df_type.simpleString()} but the table's "
                f"'{table_column}' is {table_type.simpleString()}"
            )
    lookback = None if lookup.lookback_window is None else lookup.lookback_window.total_seconds()
    return as_of_join(
        df, features, pairs[:-1], (lookup.timestamp_lookup_key, table.timestamp_key), outputs, lookback
    )


def as_of_join(
    df: DataFrame,
    features: DataFrame,
    keys: Sequence[tuple[str, str]],
    times: tuple[str, str],
    outputs: dict[str, str],
    lookback_seconds: float | None,
) -> DataFrame:
    """Each row of `df` with the latest feature row of its keys at or before its time.

    `keys` and `times` pair a `df` column with a `features` column; `outputs` maps features to
    output names. A feature row at time t matches a row at time u when t <= u and, with a
    lookback, u - t <= lookback (whole seconds, as on Databricks). Unmatched rows get nulls.

    Algorithm: both sides are stacked into one frame partitioned by key and sorted by time,
    feature rows before data rows at equal times; for each data row, `last(ignorenulls)` over
    the rows up to it picks the latest feature row (as one struct, so a null feature is not
    filled from an older row). One shuffle and sort, linear in the rows, however dense the
    history; each data row travels whole in a struct, so no join back is needed.
    """
    key_columns = [f"{_KEY}{i}" for i in range(len(keys))]
    match = F.struct(
        _col(times[1]).alias(_MATCH_TIME),
        *[_col(feature).alias(output) for feature, output in outputs.items()],
    )
    row = F.struct(*[_col(column) for column in df.columns])
    history = features.select(
        *[_col(table_key).alias(name) for (_, table_key), name in zip(keys, key_columns, strict=True)],
        _col(times[1]).alias(_TIME),
        F.lit(0).alias(_KIND),
        F.lit(None).cast(df.select(row).schema[0].dataType).alias(_ROW),
        match.alias(_MATCH),
    )
    rows = df.select(
        *[_col(df_key).alias(name) for (df_key, _), name in zip(keys, key_columns, strict=True)],
        _col(times[0]).alias(_TIME),
        F.lit(1).alias(_KIND),
        row.alias(_ROW),
        F.lit(None).cast(history.schema[_MATCH].dataType).alias(_MATCH),
    )
    up_to_row = (
        Window.partitionBy(*key_columns)
        .orderBy(_TIME, _KIND)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    latest = F.last(_MATCH, ignorenulls=True).over(up_to_row)
    joined = rows.unionByName(history).withColumn(_MATCH, latest).where(F.col(_KIND) == 1)
    in_window = F.col(f"{_MATCH}.{_MATCH_TIME}").isNotNull()
    if lookback_seconds is not None:
        age = F.unix_timestamp(F.col(_TIME)) - F.unix_timestamp(F.col(f"{_MATCH}.{_MATCH_TIME}"))
        in_window = age <= F.lit(lookback_seconds)
    return joined.select(
        *[F.col(_ROW)[column].alias(column) for column in df.columns],
        *[F.when(in_window, F.col(_MATCH)[output]).alias(output) for output in outputs.values()],
    )


def _fill_defaults(df: DataFrame, defaults: dict[str, Any]) -> DataFrame:
    """Nulls of looked-up features replaced by the lookup's default_values (as Databricks' fillna)."""
    for column, value in defaults.items():
        df = df.withColumn(column, F.coalesce(_col(column), F.lit(value).cast(df.schema[column].dataType)))
    return df


def _training_columns(
    input_columns: Sequence[str], outputs: Sequence[str], label: str | None, exclude_columns: Sequence[str]
) -> list[str]:
    """Input columns, then features, then the label (Databricks' order), without the excluded."""
    excluded = set(exclude_columns)
    if label is not None and label not in input_columns:
        raise FeatureStoreError(f"label column '{label}' is not in the DataFrame")
    if label in excluded:
        raise FeatureStoreError(f"label column '{label}' cannot be excluded")
    if unknown := sorted(excluded - {*input_columns, *outputs}):
        raise FeatureStoreError(f"exclude_columns {unknown} are neither DataFrame columns nor features")
    kept = [column for column in [*input_columns, *outputs] if column not in excluded and column != label]
    return kept + ([label] if label is not None else [])
