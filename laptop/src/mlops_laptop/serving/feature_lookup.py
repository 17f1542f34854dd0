"""Serving-time feature lookup: what a served model logged with feature lookups gets from the
online store before it predicts, as Databricks Model Serving looks features up for a model logged
with `fe.log_model` ("Automatic feature lookup with MLflow models on Databricks",
docs.databricks.com/aws/en/machine-learning/feature-store/automatic-feature-lookup).

For each lookup of the model (`model_lookups`), each request row's `lookup_key` columns pick the
latest published row of that key (`OnlineTable`, reloaded when a new snapshot is published). The
row is usable when its timestamp is at or before the request row's `timestamp_lookup_key` value
and, with a lookback, no older than the lookback allows; else the output gets its `default_values`
entry (or null) and is recorded as defaulted. A non-null value the client sent for an output wins
("include the feature values as a part of the API payload" to override them, same page).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.types import DataType, Schema

from mlops_laptop.platform.online_store import OnlineTable
from mlops_laptop.serving.invocation import InvocationError
from mlops_template.platform.feature_store import LookupSpec

# The served entity environment variable that makes Databricks log the feature lookup DataFrame in
# the inference table ("Log feature lookup DataFrames to inference tables").
FEATURE_TRACING_VARIABLE = "ENABLE_FEATURE_TRACING"

_NO_TIME = np.iinfo(np.int64).min  # epoch microseconds standing for "no timestamp"
_MICROS_PER_SECOND = 1_000_000


class FeatureLookupSetupError(ValueError):
    """The model's lookups cannot be served from the published snapshots."""


@dataclass(frozen=True)
class LookupRecord:
    """The looked-up outputs of some rows as the model got them, and which got their default."""

    names: tuple[str, ...]  # the looked-up outputs
    values: tuple[np.ndarray, ...]  # per output, its value for each row
    defaulted: np.ndarray  # bool, rows x outputs: no usable row, the default (or null) was used

    def rows(self, start: int, end: int) -> LookupRecord:
        return LookupRecord(
            self.names, tuple(column[start:end] for column in self.values), self.defaulted[start:end]
        )

    def to_dict(self) -> dict[str, Any]:
        """`{"columns", "data", "defaulted"}`: the inference record's `feature_lookup`."""
        frame = pd.DataFrame(dict(zip(self.names, self.values, strict=True)))
        data = json.loads(frame.to_json(orient="values", date_format="iso", date_unit="us"))
        defaulted = [
            [name for name, used in zip(self.names, row, strict=True) if used] for row in self.defaulted
        ]
        return {"columns": list(self.names), "data": data, "defaulted": defaulted}


@dataclass(frozen=True)
class _Output:
    """One looked-up output: the table column it reads, its default and the dtype the model takes."""

    name: str
    column: str
    default: Any
    dtype: np.dtype | None  # None: kept as looked up


class FeatureLookups:
    """The feature lookups of one served model over the online snapshots of a state directory."""

    def __init__(
        self, lookups: Sequence[LookupSpec], tables: Mapping[str, OnlineTable], schema: Schema
    ) -> None:
        types = {spec.name: spec.type for spec in schema.inputs}
        self.lookups = list(lookups)
        self.tables = dict(tables)
        self.columns = schema.input_names()  # the order the model takes its inputs in
        self._outputs = [
            [
                _Output(output, column, spec.default_values.get(output), _dtype(types[output]))
                for column, output in spec.features
            ]
            for spec in self.lookups
        ]

    @classmethod
    def open(cls, lookups: Sequence[LookupSpec], state_dir: Path, schema: Schema) -> FeatureLookups:
        """The lookups over the published snapshots; `MissingOnlineTableError` when a table has
        none, `FeatureLookupSetupError` when the model and a snapshot do not fit together."""
        types = {spec.name: spec.type for spec in schema.inputs}
        for spec in lookups:
            needed = [*spec.lookup_key, *spec.output_names]
            if spec.timestamp_lookup_key is not None:
                needed.append(spec.timestamp_lookup_key)
            if missing := [column for column in needed if column not in types]:
                raise FeatureLookupSetupError(
                    f"the lookup of {spec.table_name} uses columns {missing} that the model's signature "
                    "does not name: log the model with the feature store's log_model"
                )
            if spec.timestamp_lookup_key and types[spec.timestamp_lookup_key] != DataType.datetime:
                raise FeatureLookupSetupError(
                    f"the lookup time '{spec.timestamp_lookup_key}' of {spec.table_name} is "
                    f"{types[spec.timestamp_lookup_key]} in the model's signature, not datetime"
                )
        names = dict.fromkeys(spec.table_name for spec in lookups)  # in order: the first missing fails
        tables = {name: OnlineTable.open(state_dir, name) for name in names}
        for spec in lookups:
            _check_fits(spec, tables[spec.table_name])
        return cls(lookups, tables, schema)

    def augment(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, LookupRecord]:
        """`frame` (conformed to the model's schema) with every looked-up output, in the model's
        column order, and the record of what was looked up. Reloads newly published snapshots."""
        for table in self.tables.values():
            table.reload_if_changed()
        request = dict(frame.items())  # the columns, not copied
        looked: dict[str, np.ndarray] = {}
        defaulted: list[np.ndarray] = []
        for spec, outputs in zip(self.lookups, self._outputs, strict=True):
            table = self.tables[spec.table_name]
            _check_fits(spec, table, status=500)
            found = _found_rows(table, request, spec)
            usable = _usable(found, request, spec)
            for output in outputs:
                position = table.feature_columns.index(output.column)
                sent = request.get(output.name)
                looked[output.name], used_default = _output_column(output, position, found, usable, sent)
                defaulted.append(used_default)
        inputs = request | looked
        augmented = pd.DataFrame(
            {column: inputs[column] for column in self.columns if column in inputs},
            index=frame.index,
            copy=False,
        )
        record = LookupRecord(tuple(looked), tuple(looked.values()), np.column_stack(defaulted))
        return augmented, record


def _output_column(
    output: _Output, position: int, found: Sequence[Any], usable: np.ndarray, sent: pd.Series | None
) -> tuple[np.ndarray, np.ndarray]:
    """One output's values for the rows (a non-null value the client sent wins, else the usable
    row's value, else the default) and where the default was used. A usable row whose value is
    null gets the default too: Databricks fills every null output with the lookup's defaults
    (`TrainingSet._augment_df`, `fillna(default_values)`, ml_features/entities/training_set.py)."""
    values = [row[1][position] if ok else None for row, ok in zip(found, usable, strict=True)]
    missing = np.fromiter((pd.isna(value) for value in values), bool, len(values))
    if output.default is not None:
        values = [output.default if gap else value for value, gap in zip(values, missing, strict=True)]
    if sent is None:
        return _typed(values, output.dtype), missing
    given = sent.notna().to_numpy()
    values = [s if g else v for s, g, v in zip(sent.tolist(), given, values, strict=True)]
    return _typed(values, output.dtype), missing & ~given


def _check_fits(spec: LookupSpec, table: OnlineTable, *, status: int | None = None) -> None:
    """Refuse a snapshot whose keys or columns do not fit the lookup (a setup error at load; a
    server fault, `status`, once serving: a newer publish changed the table)."""
    problem = None
    if len(spec.lookup_key) != len(table.entity_keys):
        problem = (
            f"its lookup_key {list(spec.lookup_key)} does not match the table's entity keys "
            f"{list(table.entity_keys)}"
        )
    elif missing := [column for column, _ in spec.features if column not in table.feature_columns]:
        problem = f"the published snapshot lacks the feature columns {missing}"
    if problem is None:
        return
    message = f"feature table {table.table_name}: {problem}; publish it again (task publish_features)"
    if status is None:
        raise FeatureLookupSetupError(message)
    raise InvocationError(status, message)


def _found_rows(table: OnlineTable, request: Mapping[str, pd.Series], spec: LookupSpec) -> list[Any]:
    """The snapshot row of each request row's key (MLflow's enforcement of the request already
    refused keys that do not fit the signature's type, with a 400)."""
    return table.lookup(list(zip(*(request[column].tolist() for column in spec.lookup_key), strict=True)))


def _usable(found: Sequence[Any], request: Mapping[str, pd.Series], spec: LookupSpec) -> np.ndarray:
    """Whether each row's snapshot row may be used: present, not newer than the request's lookup
    time and, with a lookback, not older than it allows."""
    row_times = np.fromiter((_NO_TIME if t is None else t for t, _ in found), np.int64, len(found))
    usable = row_times != _NO_TIME
    if spec.timestamp_lookup_key is None:
        return usable
    request_times = _micros(request[spec.timestamp_lookup_key])
    usable &= row_times <= request_times  # never true for a null request time: it is the minimum
    if spec.lookback_seconds is not None:
        usable &= request_times - row_times <= round(spec.lookback_seconds * _MICROS_PER_SECOND)
    return usable


def _micros(times: pd.Series) -> np.ndarray:
    """Request times (naive UTC: MLflow's enforcement of a datetime input refuses time zones) as
    epoch microseconds, as snapshots store them; null is `_NO_TIME`."""
    return times.to_numpy(dtype="datetime64[us]").astype(np.int64)  # NaT is the int64 minimum


def _dtype(data_type: Any) -> np.dtype | None:
    """The numpy dtype of an MLflow column type; None for types kept as they are (strings...)."""
    if not isinstance(data_type, DataType) or data_type in (DataType.string, DataType.binary):
        return None
    return np.dtype(data_type.to_pandas())


def _typed(values: Iterable[Any], dtype: np.dtype | None) -> np.ndarray:
    """An output column in the model's dtype; with nulls, what can hold them (numbers: float NaN,
    timestamps: NaT, booleans: objects with None), as Databricks hands a missing feature on."""
    array = np.array(list(values), dtype=object)
    nulls = pd.isna(array)
    if dtype is None:
        array[nulls] = None
        return array
    if not nulls.any():
        return array.astype(dtype)
    if dtype.kind in "iuf":
        array[nulls] = np.nan
        return array.astype(np.float64)
    if dtype.kind == "M":
        return pd.to_datetime(array).to_numpy()
    array[nulls] = None
    return array
