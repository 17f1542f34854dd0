"""Ground truth: the actual fare of each trip sent to the endpoint, keyed by `trip_id`.

Locally the traffic simulator runs beside `mlops serve` and must not open the Derby metastore,
so it writes Parquet files straight into the table's directory (each file whole: hidden name,
then rename), as the endpoint does for its payload table; the unpack task, which has Spark,
registers that directory as the table. On Databricks the table is whatever holds the actual
fares with a `trip_id` (e.g. the cleaned trips of later days).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import functions as F

from mlops_template.features.columns import LABEL
from mlops_template.platform import LocalPlatform
from mlops_template.serving.inference_table import local_table_dir
from mlops_template.training.evaluate import TRIP_ID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform

log = logging.getLogger(__name__)

RECORDED_AT = "recorded_at"
GROUND_TRUTH_COLUMNS = (
    (TRIP_ID, pa.int64(), "BIGINT"),
    (LABEL, pa.float64(), "DOUBLE"),
    (RECORDED_AT, pa.timestamp("us", tz="UTC"), "TIMESTAMP"),
)
GROUND_TRUTH_SCHEMA = pa.schema([(name, arrow_type) for name, arrow_type, _ in GROUND_TRUTH_COLUMNS])
GROUND_TRUTH_DDL = ", ".join(f"{name} {sql_type}" for name, _, sql_type in GROUND_TRUTH_COLUMNS)


def write_ground_truth(directory: Path, fares: pd.DataFrame) -> Path:
    """Write `trip_id` and `fare_amount` of `fares` as one Parquet file; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    recorded_at = dt.datetime.now(dt.UTC)
    table = pa.Table.from_pydict(
        {
            TRIP_ID: fares[TRIP_ID].astype("int64").tolist(),
            LABEL: fares[LABEL].astype("float64").tolist(),
            RECORDED_AT: [recorded_at] * len(fares),
        },
        schema=GROUND_TRUTH_SCHEMA,
    )
    name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = directory / f".{name}.tmp"  # hidden: Spark skips names starting with '.'
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, directory / name)
    finally:
        temporary.unlink(missing_ok=True)
    return directory / name


def local_ground_truth_dir(state_dir: Path, table: str) -> Path:
    """Where the simulator writes the ground truth of `table` in a target's local state."""
    return local_table_dir(state_dir, table)


def register_local_ground_truth(platform: LocalPlatform, table: str) -> bool:
    """Register the simulator's ground-truth directory as `table`; False when it wrote none."""
    directory = local_ground_truth_dir(platform.state_dir, table)
    if not directory.is_dir():
        return False
    platform.ensure_schema(table)
    location = str(directory).replace("\\", "\\\\").replace("'", "\\'")
    platform.spark.sql(
        f"CREATE TABLE IF NOT EXISTS {platform.table_name(table)} ({GROUND_TRUTH_DDL}) "
        f"USING parquet LOCATION '{location}'"
    )
    platform.spark.catalog.refreshTable(platform.table_name(table))
    return True


def read_labels(platform: Platform, table: str) -> DataFrame | None:
    """One actual fare per trip_id from `table`, or None when there is no such table (yet)."""
    if not table:
        return None
    if isinstance(platform, LocalPlatform):
        register_local_ground_truth(platform, table)
    if not platform.table_exists(table):
        log.info("no ground truth table %s: predictions stay unlabeled", table)
        return None
    platform.spark.catalog.refreshTable(platform.table_name(table))
    return (
        platform.read_table(table)
        .where(F.col(TRIP_ID).isNotNull() & F.col(LABEL).isNotNull())
        .groupBy(TRIP_ID)
        .agg(F.max(F.col(LABEL).cast("double")).alias(LABEL))  # a trip has one fare
    )
