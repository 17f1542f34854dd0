"""The local implementation: embedded Spark, Derby metastore and an MLflow SQLite store.

All state of a target lives under `<state root>/<target>/` (default `.mlops/<target>/` next to
databricks.yml): `warehouse/`, `metastore_db/`, `mlflow.db`, `artifacts/`, `runs/`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

import mlflow

from mlops_template.platform.base import Platform
from mlops_template.platform.feature_store import FeatureStore
from mlops_template.platform.names import local_database, split_name, to_local
from mlops_template.platform.task_values import LocalTaskValues

if TYPE_CHECKING:
    from datetime import timedelta

    from pyspark.sql import DataFrame, SparkSession

    from mlops_template.monitoring.quality_monitor import QualityMonitors
    from mlops_template.serving.deploy import EndpointDeployer

log = logging.getLogger(__name__)

SAMPLE_TRIPS_TABLE = "samples.nyctaxi.trips"
DEFAULT_SAMPLE_ROWS = 20_000
_LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
LOCK_FILE = "state.lock"
JAVA_INSTALL_HINT = (
    "install Java 17+ (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; "
    "macOS: brew install openjdk@17) or set JAVA_HOME"
)


class LocalStateError(RuntimeError):
    """The local state cannot be used (locked by another process, Java missing, ...)."""


def default_state_root() -> Path:
    """`$MLOPS_HOME`, else `.mlops/` beside the nearest databricks.yml, else in the cwd."""
    if home := os.environ.get("MLOPS_HOME"):
        return Path(home).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "databricks.yml").is_file():
            return folder / ".mlops"
    return Path.cwd() / ".mlops"


class LocalPlatform(Platform):
    """A laptop: local Spark with Hive support, the same three-level names, SQLite MLflow."""

    name = "local"

    def __init__(
        self,
        target: str,
        state_root: Path | None = None,
        *,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        shuffle_partitions: int = 8,
    ) -> None:
        self.target = target
        self.state_dir = (state_root or default_state_root()) / target
        self.sample_rows = sample_rows
        self.shuffle_partitions = shuffle_partitions
        self.task_values = LocalTaskValues()
        self._spark: SparkSession | None = None
        self._lock: IO[str] | None = None

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = self._start_spark()
        return self._spark

    @property
    def feature_store(self) -> FeatureStore:
        from mlops_template.platform.local_feature_store import LocalFeatureStore

        return LocalFeatureStore(self)

    def table_name(self, name: str) -> str:
        return to_local(name)

    def ensure_schema(self, name: str) -> None:
        database = local_database(*split_name(name)[:2])
        if not self.spark.catalog.databaseExists(database):  # IF NOT EXISTS alone logs a Hive error
            self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")

    def merge_table(self, df: DataFrame, name: str, keys: Sequence[str]) -> None:
        """Existing rows without a key in `df`, plus `df`, swapped in whole (see `_replace_data`).

        Keys match null-safely (`<=>`), as the Databricks MERGE on `t.k <=> s.k` does: a row
        whose key is null is replaced by a row of `df` with the same (null) key, not duplicated.
        """
        if not self.table_exists(name):
            self.save_table(df, name)
            return
        from pyspark.sql import functions as F

        existing = self.spark.table(self.table_name(name)).alias("existing")
        incoming = df.select(*[_quoted(key) for key in keys]).alias("incoming")
        same_key = [
            F.col(f"existing.{_quoted(key)}").eqNullSafe(F.col(f"incoming.{_quoted(key)}")) for key in keys
        ]
        kept = existing.join(incoming, on=same_key, how="left_anti")
        self._replace_data(name, kept.unionByName(df))
        log.info("merged into %s by %s", name, list(keys))

    def _replace_data(self, name: str, data: DataFrame) -> None:
        """Swap the table's data for `data` without ever leaving it partly written.

        Spark cannot overwrite the files a plan reads (and `data` reads the table), and without
        Delta an overwrite in place deletes the old files before writing new ones: a failure in
        between would lose the table. So `data` is written to a fresh directory beside the
        table's, and one metastore update (ALTER TABLE SET LOCATION) commits it. A failure before
        that leaves the table as it was; the old directory is deleted only after the switch.
        """
        table = self.table_name(name)
        old_location, provider = self._location_and_format(table)
        new_location = f"{old_location.rsplit('/', 1)[0]}/{table.split('.')[-1]}-{uuid.uuid4().hex[:12]}"
        try:
            data.write.format(provider).mode("errorifexists").save(new_location)
            self.spark.sql(f"ALTER TABLE {table} SET LOCATION '{_sql_escape(new_location)}'")
        except BaseException:
            if self._location_and_format(table)[0] != new_location:
                _delete_directory(new_location)
            raise
        self.spark.catalog.refreshTable(table)
        _delete_directory(old_location)

    def _location_and_format(self, table: str) -> tuple[str, str]:
        """The table's data location and format (`DESCRIBE TABLE EXTENDED`)."""
        rows = self.spark.sql(f"DESCRIBE TABLE EXTENDED {table}").collect()
        details = {row["col_name"]: row["data_type"] for row in rows}
        return details["Location"], details["Provider"]

    def endpoint_deployer(self, *, ready_timeout: timedelta | None = None) -> EndpointDeployer:
        """The recorded spec, checked on loopback; its check needs no wait (`ready_timeout` unused)."""
        from mlops_template.serving.local_deploy import LocalEndpointDeployer

        return LocalEndpointDeployer(self)

    def quality_monitors(self) -> QualityMonitors:
        from mlops_template.monitoring.quality_monitor import LocalQualityMonitors

        return LocalQualityMonitors(self)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        """The same SQLite database through the Unity Catalog-strict store (`uc_registry`)."""
        from mlops_template.platform.uc_registry import registry_uri

        return registry_uri(self.tracking_uri)

    def configure_mlflow(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)

    def experiment_id(self, experiment_name: str) -> str:
        self.configure_mlflow()
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        artifacts = self.state_dir / "artifacts" / experiment_name.strip("/").replace("/", "_")
        return mlflow.create_experiment(experiment_name, artifact_location=artifacts.as_uri())

    def _provide_missing_table(self, name: str) -> bool:
        """Locally, `samples.nyctaxi.trips` is generated on first read, as Databricks ships it."""
        if name != SAMPLE_TRIPS_TABLE:
            return False
        from mlops_template.data.generator import generate_trips

        log.info("generating %d sample trips for %s", self.sample_rows, name)
        self.save_table(generate_trips(self.spark, rows=self.sample_rows), name)
        return True

    def stop(self) -> None:
        """Stop Spark and release the state lock."""
        if self._spark is not None:
            self._spark.stop()
            self._spark = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def reset(self) -> bool:
        """Delete this target's local state; False if there was none."""
        self.stop()
        self._acquire_lock()
        try:
            if not self.state_dir.exists():
                return False
            shutil.rmtree(self.state_dir)
            return True
        finally:
            self._release_lock()

    def _start_spark(self) -> SparkSession:
        _require_java()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from pyspark.sql import SparkSession

        java_options = (
            f"-Dderby.system.home={self.state_dir} -Dlog4j2.configurationFile={_LOG4J_CONFIG.as_uri()}"
        )
        builder = (
            SparkSession.builder.master("local[*]")
            .appName(f"mlops-{self.target}")
            .config("spark.sql.warehouse.dir", str(self.state_dir / "warehouse"))
            .config(
                "spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={self.state_dir / 'metastore_db'};create=true",
            )
            .config("spark.driver.extraJavaOptions", java_options)
            .config("spark.driver.memory", os.environ.get("MLOPS_SPARK_DRIVER_MEMORY", "4g"))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", str(self.shuffle_partitions))
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000")  # fewer spark_udf calls
            .enableHiveSupport()
        )
        active = SparkSession.getActiveSession()
        warehouse = str(self.state_dir / "warehouse")
        active_warehouse = active.conf.get("spark.sql.warehouse.dir") if active is not None else None
        if active_warehouse is not None and active_warehouse.removeprefix("file:") != warehouse:
            raise LocalStateError(
                "this process already runs a Spark session over other local state "
                f"({active_warehouse}); one process serves one target"
            )
        log.info("starting local Spark with state in %s", self.state_dir)
        return builder.getOrCreate()

    def _acquire_lock(self) -> None:
        """One process at a time may use a target's state (Derby allows one)."""
        if self._lock is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.state_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held while Spark runs
        if (holder := _take_lock(lock)) is not None:
            lock.close()
            raise LocalStateError(
                f"The local state {self.state_dir} is in use by {holder}. "
                "Wait for it to finish or stop it; one process at a time can use a target's "
                "metastore."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()} ({' '.join(sys.argv)[:200]})")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _quoted(name: str) -> str:
    """A column name Spark takes literally (dots are not struct paths)."""
    return "`" + name.replace("`", "``") + "`"


def _sql_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _delete_directory(location: str) -> None:
    """Delete a local directory given as a `file:` URI; a leftover only wastes space."""
    path = url2pathname(urlparse(location).path)
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("could not delete the old table data %s: %s", path, error)


def _take_lock(file: IO[str]) -> str | None:
    """Take the exclusive state lock on `file`: None when taken, else who holds it."""
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        return file.read().strip() or "another process"
    return None


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the state lock of `state_dir` (None when free); probes without keeping it."""
    path = state_dir / LOCK_FILE
    if not path.exists():
        return None
    with open(path) as file:
        return _take_lock(file)


def find_java() -> str | None:
    """The `java` local Spark starts: $JAVA_HOME/bin/java, else `java` on the PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    return shutil.which("java")


def _require_java() -> None:
    if find_java() is None:
        raise LocalStateError(f"Local Spark needs Java 17 or newer and none was found: {JAVA_INSTALL_HINT}.")
