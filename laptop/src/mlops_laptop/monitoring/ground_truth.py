"""The simulator's ground truth: the label of each row it sent, as files of the ground-truth table.

The traffic simulator runs beside `mlops serve` and must not open the Derby metastore, so it
writes Parquet files (row id, label, `recorded_at`) straight into the table's directory under the
local warehouse, each file whole, as the endpoint does for its payload table. The local platform
registers that directory as the table when a task first reads it (its columns from the files).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_laptop.platform.warehouse import local_table_dir
from mlops_template.atomic_files import write_atomically

RECORDED_AT = "recorded_at"


def ground_truth_dir(state_dir: Path, table: str) -> Path:
    """Where the simulator writes the files of ground-truth `table` in a target's local state."""
    return local_table_dir(state_dir, table)


def write_ground_truth(directory: Path, labels: pd.DataFrame, row_id: str, label: str) -> Path:
    """Write the `row_id` and `label` columns of `labels` as one Parquet file; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(labels[[row_id, label]].astype({label: "float64"}), preserve_index=False)
    recorded_at = pa.array([dt.datetime.now(dt.UTC)] * len(labels), type=pa.timestamp("us", tz="UTC"))
    table = table.append_column(RECORDED_AT, recorded_at)
    path = directory / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    return write_atomically(path, lambda temporary: pq.write_table(table, temporary))
