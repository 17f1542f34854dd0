"""The local online store: the latest row per entity key of each feature table, for serving.

Databricks publishes feature tables to an Online Feature Store (`fe.publish_table`) that a served
model reads by key. Locally the `publish_features` task writes one SQLite file per feature table
under `<state_dir>/online_store/`, written whole to a temporary file and renamed over the old one,
so a reader sees the previous snapshot or the new one, never a partial one. The endpoint holds
an `OnlineTable` in memory (a dict by key) and calls `reload_if_changed` before lookups: a stat of
the file, so a new publish is served without a restart.

Timestamps are naive UTC (the Spark session time zone) stored as int64 epoch microseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sqlite3
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_template.atomic_files import write_atomically
from mlops_template.platform.base import MissingTableError
from mlops_template.platform.names import split_name

ONLINE_STORE_DIR = "online_store"
PUBLISH_HINT = "publish it: run task publish_features of job pipeline"

_ROWS_TABLE = "feature_rows"
_META_TABLE = "snapshot_meta"
_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = pd.Timedelta(microseconds=1)
# Column kinds a snapshot stores losslessly in SQLite, and how a stored value reads back.
_READERS: dict[str, Callable[[Any], Any]] = {
    "integer": int,
    "double": float,
    "boolean": bool,
    "string": str,
    "timestamp": lambda micros: _EPOCH + dt.timedelta(microseconds=micros),
}

# One looked-up row: its timestamp (epoch microseconds) and feature values; (None, None) = no row.
LookupResult = tuple[int | None, tuple[Any, ...] | None]


class OnlineStoreError(ValueError):
    """Rows that cannot be written as a snapshot (key columns missing, unsupported types)."""


class MissingOnlineTableError(MissingTableError):
    """No snapshot of a feature table has been published."""


def online_store_dir(state_dir: Path) -> Path:
    """Where the snapshots of a target's state live."""
    return Path(state_dir) / ONLINE_STORE_DIR


def snapshot_path(state_dir: Path, table_name: str) -> Path:
    """The snapshot file of feature table `table_name` (`catalog.schema.table`, any case)."""
    return online_store_dir(state_dir) / f"{'.'.join(split_name(table_name)).lower()}.sqlite"


def normalize_key(value: Any) -> Hashable:
    """A key value as snapshots and lookups compare it: integral numbers as int (42, 42.0 and
    np.int64(42) are one key), other floats as float, None and NaN as None; strings and other
    values unchanged ("42" stays a string)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return int(value) if float(value).is_integer() else float(value)
    return value


def write_snapshot(
    state_dir: Path,
    table_name: str,
    rows: pd.DataFrame,
    entity_keys: Sequence[str],
    timestamp_key: str,
) -> Path:
    """Write the snapshot of `table_name`: the latest row (by `timestamp_key`) of each entity key
    of `rows`, replacing the previous snapshot in one rename. Returns the snapshot's path."""
    keys = list(entity_keys)
    if missing := [column for column in [*keys, timestamp_key] if column not in rows.columns]:
        raise OnlineStoreError(f"snapshot of {table_name}: the rows lack the key columns {missing}")
    kinds = {column: _column_kind(table_name, rows[column]) for column in rows.columns}
    if kinds[timestamp_key] != "timestamp":
        raise OnlineStoreError(
            f"snapshot of {table_name}: the timestamp key '{timestamp_key}' is {rows[timestamp_key].dtype}, "
            "expected a timestamp"
        )
    if (nulls := rows[[*keys, timestamp_key]].isna().any()).any():
        raise OnlineStoreError(
            f"snapshot of {table_name}: key columns {list(nulls[nulls].index)} hold nulls; feature table "
            "keys may not be null"
        )
    latest = rows.sort_values(timestamp_key, kind="stable").drop_duplicates(keys, keep="last")
    features = [column for column in rows.columns if column not in {*keys, timestamp_key}]
    meta = {
        "table_name": table_name,
        "entity_keys": keys,
        "timestamp_key": timestamp_key,
        "feature_columns": features,
        "kinds": kinds,
        "rows": len(latest),
        "published_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(),
    }
    columns = [*keys, timestamp_key, *features]
    records = zip(*[_stored_values(latest[column], kinds[column]) for column in columns], strict=True)
    path = snapshot_path(state_dir, table_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda temporary: _write_sqlite(temporary, meta, columns, records))


def _column_kind(table_name: str, values: pd.Series) -> str:
    """The stored kind of a column from its pandas dtype (object columns: from their values)."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    present = values.dropna()
    if isinstance(dtype, pd.StringDtype) or all(isinstance(value, str) for value in present):
        return "string"
    example = type(present.iloc[0]).__name__
    raise OnlineStoreError(
        f"snapshot of {table_name}: column '{values.name}' holds {example} values; the online store "
        f"keeps {sorted(_READERS)} columns (cast it in the feature table)"
    )


def _stored_values(values: pd.Series, kind: str) -> list[Any]:
    """A column as SQLite values: Python scalars, None for missing, timestamps as UTC micros."""
    if kind == "timestamp":
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        micros = (values - pd.Timestamp(_EPOCH)) // _MICROSECOND
        return [None if pd.isna(value) else int(value) for value in micros.astype(object)]
    read = _READERS[kind]
    return [None if pd.isna(value) else read(value) for value in values.astype(object)]


def _write_sqlite(
    path: Path, meta: dict[str, Any], columns: Sequence[str], records: Iterable[tuple[Any, ...]]
) -> None:
    connection = sqlite3.connect(path)
    try:
        quoted = ", ".join(_quoted(column) for column in columns)
        with connection:
            connection.execute(f"CREATE TABLE {_META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            connection.executemany(
                f"INSERT INTO {_META_TABLE} VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
            connection.execute(f"CREATE TABLE {_ROWS_TABLE} ({quoted})")
            placeholders = ", ".join("?" for _ in columns)
            connection.executemany(f"INSERT INTO {_ROWS_TABLE} VALUES ({placeholders})", records)
    finally:
        connection.close()


def _quoted(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Snapshot:
    """One loaded snapshot file: its identity on disk and its rows by normalized key."""

    signature: tuple[int, int, int]  # inode, mtime_ns, size
    entity_keys: tuple[str, ...]
    timestamp_key: str
    feature_columns: tuple[str, ...]
    rows: dict[tuple[Hashable, ...], tuple[int, tuple[Any, ...]]]


class OnlineTable:
    """The published snapshot of one feature table, in memory; no Spark, no metastore."""

    def __init__(self, path: Path, table_name: str, snapshot: _Snapshot) -> None:
        self.path = path
        self.table_name = table_name
        self._snapshot = snapshot

    @classmethod
    def open(cls, state_dir: Path, table_name: str) -> OnlineTable:
        """The snapshot of `table_name`, or MissingOnlineTableError saying how to publish it."""
        path = snapshot_path(state_dir, table_name)
        try:
            snapshot = _load(path)
        except FileNotFoundError:
            raise MissingOnlineTableError(
                f"feature table {table_name} has no online snapshot ({path}): {PUBLISH_HINT}"
            ) from None
        return cls(path, table_name, snapshot)

    @property
    def entity_keys(self) -> tuple[str, ...]:
        return self._snapshot.entity_keys

    @property
    def timestamp_key(self) -> str:
        return self._snapshot.timestamp_key

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self._snapshot.feature_columns

    def __len__(self) -> int:
        return len(self._snapshot.rows)

    def lookup(self, keys: Sequence[tuple[Any, ...]]) -> list[LookupResult]:
        """For each key (values in `entity_keys` order, normalized here): the row's timestamp in
        epoch microseconds and its feature values in `feature_columns` order; (None, None) when
        the key has no row."""
        rows = self._snapshot.rows
        return [rows.get(tuple(normalize_key(value) for value in key), (None, None)) for key in keys]

    def reload_if_changed(self) -> bool:
        """Load the snapshot again if its file changed since it was loaded (a stat: cheap when it
        did not); True if it did. A snapshot deleted since keeps serving what was loaded."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        if _signature(stat) == self._snapshot.signature:
            return False
        try:
            self._snapshot = _load(self.path)
        except FileNotFoundError:
            return False
        return True


def _signature(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _load(path: Path) -> _Snapshot:
    """Read the snapshot file whole (so its signature is that of the bytes read) into a dict."""
    with open(path, "rb") as file:
        signature = _signature(os.fstat(file.fileno()))
        data = file.read()
    connection = sqlite3.connect(":memory:")
    try:
        connection.deserialize(data)
        meta = {key: json.loads(value) for key, value in connection.execute(f"SELECT * FROM {_META_TABLE}")}
        records = connection.execute(f"SELECT * FROM {_ROWS_TABLE}").fetchall()
    finally:
        connection.close()
    keys, features = meta["entity_keys"], meta["feature_columns"]
    readers = [_reader(meta["kinds"][column]) for column in features]
    width = len(keys)
    rows = {
        tuple(normalize_key(value) for value in record[:width]): (
            record[width],
            tuple(read(value) for read, value in zip(readers, record[width + 1 :], strict=True)),
        )
        for record in records
    }
    return _Snapshot(signature, tuple(keys), meta["timestamp_key"], tuple(features), rows)


def _reader(kind: str) -> Callable[[Any], Any]:
    """A stored value back as its kind's Python value (None stays None)."""
    read = _READERS[kind]
    return lambda value: None if value is None else read(value)
