"""Tables of the local warehouse: where a table's files are, and the SQL that registers or moves
them (with its string escaping in one place)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops_template.platform.names import local_database, split_name

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def local_table_dir(state_dir: Path, table: str) -> Path:
    """The directory of Unity Catalog table `table` in the local warehouse (as `names.to_local` maps it)."""
    catalog, schema, name = split_name(table)
    return state_dir / "warehouse" / f"{local_database(catalog, schema)}.db" / name.lower()


def sql_string(text: str) -> str:
    """`text` as a Spark SQL string literal (quoted; backslashes and quotes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def create_table_at(
    spark: SparkSession,
    table: str,
    directory: Path | str,
    *,
    ddl: str | None = None,
    data_format: str = "parquet",
) -> None:
    """Register the files under `directory` as table `table` unless it exists; its columns are
    `ddl`, else read from the files."""
    columns = f" ({ddl})" if ddl else ""
    location = sql_string(str(directory))
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table}{columns} USING {data_format} LOCATION {location}")


def set_table_location(spark: SparkSession, table: str, location: str) -> None:
    """Point table `table` at the data under `location` (one metastore update)."""
    spark.sql(f"ALTER TABLE {table} SET LOCATION {sql_string(location)}")
