"""The local platform: name mapping, tables, the sample source, the state lock, MLflow stores."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn_example.spec import PROBLEM as CHURN
from churn_example.spec import SOURCE_COLUMNS
from mlops_laptop.platform.local import LocalPlatform, LocalStateError
from mlops_laptop.platform.warehouse import create_table_at, set_table_location, sql_string
from mlops_template.platform import MissingTableError
from mlops_template.platform.names import TableNameError, to_local
from mlops_template.platform.task_values import LocalTaskValues
from mlops_template.problem_spec import PROBLEM_VARIABLE, ProblemSpecError

# A problem whose sample table no other test reads: its first read here generates it.
SAMPLED = dataclasses.replace(CHURN, sample_table="samples.platform_test.events")


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("workspace.sales.orders", "workspace__sales.orders"),
        ("Prod.Sales.Orders_Clean", "prod__sales.orders_clean"),
    ],
)
def test_three_level_names_map_onto_one_local_database_per_schema(name, local):
    assert to_local(name) == local


@pytest.mark.parametrize("name", ["orders", "a.b", "a.b.c.d", "a.b-c.d", "a__x.b.c", "a.b.c;drop"])
def test_names_that_are_not_three_level_are_rejected(name):
    with pytest.raises(TableNameError, match="three-level|reserved"):
        to_local(name)


def test_tables_round_trip_under_their_unity_catalog_names(platform, spark):
    platform.save_table(spark.createDataFrame([(1, "a")], "id int, v string"), "cat.sch.things")
    assert platform.table_exists("cat.sch.things")
    assert platform.read_table("cat.sch.things").collect()[0]["v"] == "a"
    assert (platform.state_dir / "warehouse" / "cat__sch.db" / "things").is_dir()


def test_merge_matches_null_keys_as_databricks_merge_does(platform, spark):
    """Keys match null-safely, as `MERGE ... ON t.k <=> s.k` (platform/databricks.py) does on
    Databricks: merging a row whose key is null replaces the row with that null key instead of
    adding a second one (https://docs.databricks.com/sql/language-manual/functions/lteqgtsign.html)."""
    schema = "region string, hour int, amount double"
    name = "cat.sch.merged_with_null_keys"
    first = [("a", 1, 1.0), (None, 1, 2.0), ("b", None, 3.0), (None, None, 4.0)]
    platform.merge_table(spark.createDataFrame(first, schema), name, ["region", "hour"])
    again = [(None, 1, 20.0), ("b", None, 30.0), (None, None, 40.0), ("c", 2, 5.0)]
    platform.merge_table(spark.createDataFrame(again, schema), name, ["region", "hour"])
    rows = {(row.region, row.hour): row.amount for row in platform.read_table(name).collect()}
    assert platform.read_table(name).count() == len(rows) == 5
    assert rows == {("a", 1): 1.0, (None, 1): 20.0, ("b", None): 30.0, (None, None): 40.0, ("c", 2): 5.0}


def test_missing_table_error_says_what_to_run(platform):
    with pytest.raises(MissingTableError, match="cat.sch.nothing does not exist.*Run job pipeline first"):
        platform.read_table("cat.sch.nothing", produced_by="job pipeline")


def test_the_problem_specs_sample_table_is_generated_on_first_read(platform, monkeypatch):
    """Locally the spec's `sample_table` stands in for the source table: its `sample_source` rows."""
    monkeypatch.setenv(PROBLEM_VARIABLE, f"{__name__}:SAMPLED")
    assert not platform.table_exists(SAMPLED.sample_table)
    events = platform.read_table(SAMPLED.sample_table)
    assert events.count() == platform.sample_rows
    assert dict(events.dtypes) == SOURCE_COLUMNS
    assert platform.table_exists(SAMPLED.sample_table)
    with pytest.raises(MissingTableError, match="samples.platform_test.others does not exist"):
        platform.read_table("samples.platform_test.others")  # only the sample table is generated


def test_a_sample_table_without_a_sample_source_is_refused():
    with pytest.raises(ProblemSpecError, match="sample_table 'samples.x.y' needs a sample_source"):
        dataclasses.replace(CHURN, sample_source=None, sample_table="samples.x.y")


def test_a_second_process_on_the_same_state_gets_a_clear_error(platform, spark):
    other = LocalPlatform(platform.target, platform.state_dir.parent)
    with pytest.raises(LocalStateError, match=r"in use by process \d+"):
        other.reset()


def test_mlflow_uses_the_sqlite_store_and_artifacts_in_the_state(platform):
    import mlflow

    experiment_id = platform.experiment_id("/Users/someone/exp")
    assert mlflow.get_tracking_uri() == f"sqlite:///{platform.state_dir / 'mlflow.db'}"
    # The registry is the same database through the Unity Catalog-strict store (test_uc_registry.py).
    assert mlflow.get_registry_uri() == f"local-uc:///{platform.state_dir / 'mlflow.db'}"
    location = mlflow.get_experiment(experiment_id).artifact_location
    assert location.startswith((platform.state_dir / "artifacts").as_uri())
    assert platform.experiment_id("/Users/someone/exp") == experiment_id


def test_task_values_must_be_json_and_belong_to_a_task():
    values = LocalTaskValues()
    with pytest.raises(RuntimeError, match="outside a job task"):
        values.set("k", 1)
    values.current_task = "t"
    values.set("k", {"a": [1, 2]})
    with pytest.raises(ValueError, match="not JSON-serializable"):
        values.set("bad", object())
    assert values.get("t", "k") == {"a": [1, 2]}
    assert values.get("t", "absent", "default") == "default"


def test_the_laptop_platform_imports_where_fcntl_does_not_exist():
    """Windows has no `fcntl`: the state lock (filelock) must not need it to import."""
    code = "import sys; sys.modules['fcntl'] = None; import mlops_laptop.platform.local"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_local_spark_reads_the_packaged_log4j_configuration(spark):
    options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    [uri] = re.findall(r"-Dlog4j2\.configurationFile=(\S+)", options)
    assert Path(url2pathname(urlparse(uri).path)).is_file()


def test_sql_strings_reach_spark_unchanged(spark):
    text = "C:\\Users\\o'brien\\state's \\'dir"
    assert spark.sql(f"SELECT {sql_string(text)} AS s").first().s == text


def test_table_locations_with_quotes_are_registered_and_moved(platform, spark, tmp_path):
    """`create_table_at` / `set_table_location` quote the path as a Spark SQL string."""
    first, second = tmp_path / "it's", tmp_path / "o'ther"
    for directory, value in ((first, 1), (second, 2)):
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"v": pa.array([value], pa.int64())}), directory / "part-0.parquet")
    platform.ensure_schema("cat.sch.located")
    table = platform.table_name("cat.sch.located")
    create_table_at(spark, table, first, ddl="v BIGINT")
    assert [row.v for row in spark.table(table).collect()] == [1]
    set_table_location(spark, table, f"file:{second}")
    spark.catalog.refreshTable(table)
    assert [row.v for row in spark.table(table).collect()] == [2]
