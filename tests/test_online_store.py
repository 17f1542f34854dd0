"""The local online store: snapshot files of the latest row per key, read without Spark.

Hand-made pandas rows; no Spark session (the publish task's Spark side is tested in
tests/test_feature_store.py)."""

from __future__ import annotations

import datetime as dt
import os
import time

import numpy as np
import pandas as pd
import pytest

from mlops_laptop.platform.online_store import (
    MissingOnlineTableError,
    OnlineStoreError,
    OnlineTable,
    normalize_key,
    online_store_dir,
    snapshot_path,
    write_snapshot,
)
from mlops_template.platform import MissingTableError

TABLE = "cat.sch.zip_features"
T = pd.Timestamp


def _micros(value: str) -> int:
    return int((T(value) - T("1970-01-01")) // pd.Timedelta(microseconds=1))


def _history() -> pd.DataFrame:
    """Zip 1 at 10:00, 12:00 and 11:00 (out of order), zip 2 at 9:00; nullable types."""
    times = ["2024-01-01 10:00", "2024-01-01 12:00", "2024-01-01 11:00", "2024-01-01 09:00"]
    return pd.DataFrame(
        {
            "zip": [1, 1, 1, 2],
            "ts": pd.to_datetime(times),
            "mean": [1.0, 2.0, 3.0, np.nan],
            "count": pd.array([1, 2, 3, None], dtype="Int64"),
            "weekend": pd.array([False, True, False, None], dtype="boolean"),
            "name": ["a", "b", "c", None],
        }
    )


def test_the_snapshot_holds_the_latest_row_per_key_with_its_types(tmp_path):
    """Databricks online tables keep one row per primary key, the timestamp key deciding which
    (databricks/sdk/service/database.py, SyncedTableSpec.timeseries_key: "Time series key to
    deduplicate (tie-break) rows with the same primary key")."""
    path = write_snapshot(tmp_path, TABLE, _history(), ["zip"], "ts")
    assert path == snapshot_path(tmp_path, TABLE) == online_store_dir(tmp_path) / f"{TABLE}.sqlite"
    table = OnlineTable.open(tmp_path, TABLE)
    assert (table.entity_keys, table.timestamp_key) == (("zip",), "ts")
    assert table.feature_columns == ("mean", "count", "weekend", "name")
    assert len(table) == 2
    found = table.lookup([(1,), (2,), (3,)])
    assert found == [
        (_micros("2024-01-01 12:00"), (2.0, 2, True, "b")),
        (_micros("2024-01-01 09:00"), (None, None, None, None)),
        (None, None),
    ]
    assert [type(value) for value in found[0][1]] == [float, int, bool, str]
    assert list(online_store_dir(tmp_path).iterdir()) == [path]  # no temporary file left


def test_composite_keys_and_timestamp_features_round_trip(tmp_path):
    rows = pd.DataFrame(
        {
            "region": ["north", "north"],
            "zip": [7, 8],
            "ts": pd.to_datetime(["2024-01-01 10:00:00.000001", "2024-01-01 10:00:00.000000"], utc=True),
            "last_seen": pd.to_datetime(["2023-12-31 23:59:59", None]),
        }
    )
    write_snapshot(tmp_path, TABLE, rows, ["region", "zip"], "ts")
    table = OnlineTable.open(tmp_path, TABLE)
    assert table.lookup([("north", 7.0), ("north", np.int32(8)), (7, "north")]) == [
        (_micros("2024-01-01 10:00:00.000001"), (dt.datetime(2023, 12, 31, 23, 59, 59),)),
        (_micros("2024-01-01 10:00"), (None,)),
        (None, None),
    ]


def test_a_new_publish_is_seen_by_the_open_table_after_reload(tmp_path):
    """The endpoint keeps one OnlineTable per feature table and serves each publish without a
    restart (issue 15); an unchanged file is not read again."""
    write_snapshot(tmp_path, TABLE, _history(), ["zip"], "ts")
    table = OnlineTable.open(tmp_path, TABLE)
    assert table.reload_if_changed() is False
    newer = pd.DataFrame(
        {
            "zip": [1, 3],
            "ts": pd.to_datetime(["2024-01-01 13:00", "2024-01-01 13:00"]),
            "mean": [9.0, 4.0],
            "count": pd.array([9, 4], dtype="Int64"),
            "weekend": pd.array([False, False], dtype="boolean"),
            "name": ["z", "y"],
        }
    )
    write_snapshot(tmp_path, TABLE, newer, ["zip"], "ts")
    assert table.lookup([(1,)])[0][1][0] == 2.0  # the loaded snapshot until reloaded
    assert table.reload_if_changed() is True
    assert table.lookup([(1,), (2,), (3,)]) == [
        (_micros("2024-01-01 13:00"), (9.0, 9, False, "z")),
        (None, None),
        (_micros("2024-01-01 13:00"), (4.0, 4, False, "y")),
    ]
    assert table.reload_if_changed() is False
    os.remove(snapshot_path(tmp_path, TABLE))
    assert table.reload_if_changed() is False  # a deleted snapshot: keep serving the loaded one
    assert table.lookup([(3,)])[0][1] == (4.0, 4, False, "y")


def test_a_missing_snapshot_says_how_to_publish_it(tmp_path):
    with pytest.raises(MissingOnlineTableError, match=f"{TABLE} has no online snapshot") as error:
        OnlineTable.open(tmp_path, TABLE)
    assert str(error.value).endswith("publish it: run task publish_features of job pipeline")
    assert issubclass(MissingOnlineTableError, MissingTableError)


def test_keys_normalize_across_numeric_types_but_not_strings():
    assert [normalize_key(v) for v in (42, 42.0, np.int64(42), np.float32(42.0))] == [42] * 4
    assert type(normalize_key(np.int64(42))) is int
    assert normalize_key("42") == "42"
    assert normalize_key(42.5) == 42.5
    assert normalize_key(None) is None and normalize_key(float("nan")) is None
    assert normalize_key(np.bool_(True)) is True


def test_rows_a_snapshot_cannot_hold_are_rejected(tmp_path):
    rows = _history()
    with pytest.raises(OnlineStoreError, match=r"lack the key columns \['id'\]"):
        write_snapshot(tmp_path, TABLE, rows, ["id"], "ts")
    with pytest.raises(OnlineStoreError, match="timestamp key 'zip' is int64, expected a timestamp"):
        write_snapshot(tmp_path, TABLE, rows, ["name"], "zip")
    with pytest.raises(OnlineStoreError, match=r"key columns \['zip'\] hold nulls"):
        write_snapshot(tmp_path, TABLE, rows.assign(zip=[1, None, 2, 3]), ["zip"], "ts")
    with pytest.raises(OnlineStoreError, match="column 'day' holds date values"):
        write_snapshot(tmp_path, TABLE, rows.assign(day=dt.date(2024, 1, 1)), ["zip"], "ts")
    assert not snapshot_path(tmp_path, TABLE).exists()


def test_a_lookup_of_a_few_keys_takes_microseconds(tmp_path):
    """Issue 15's budget: the lookup adds at most 1 ms at p50; the snapshot part must be far below."""
    zips = np.arange(10_000)
    rows = pd.DataFrame({"zip": zips, "ts": pd.Timestamp("2024-01-01"), "mean": zips * 1.5, "count": zips})
    write_snapshot(tmp_path, TABLE, rows, ["zip"], "ts")
    table = OnlineTable.open(tmp_path, TABLE)
    keys = [(1,), (2.0,), (np.int64(3),), (20_000,)]
    timings = []
    for _ in range(2_000):
        start = time.perf_counter()
        table.reload_if_changed()
        table.lookup(keys)
        timings.append(time.perf_counter() - start)
    assert np.median(timings) < 100e-6
