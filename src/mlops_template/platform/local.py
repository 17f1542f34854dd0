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
from pathlib import Path
from typing import IO, TYPE_CHECKING

import mlflow

from mlops_template.platform.base import Platform
from mlops_template.platform.names import local_database, split_name, to_local
from mlops_template.platform.task_values import LocalTaskValues

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SAMPLE_TRIPS_TABLE = "samples.nyctaxi.trips"
DEFAULT_SAMPLE_ROWS = 20_000
_LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


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

    def table_name(self, name: str) -> str:
        return to_local(name)

    def ensure_schema(self, name: str) -> None:
        catalog, schema, _ = split_name(name)
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {local_database(catalog, schema)}")

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    def configure_mlflow(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

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

        java_options = f"-Dderby.system.home={self.state_dir} -Dlog4j2.configurationFile={_LOG4J_CONFIG.as_uri()}"
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
            .enableHiveSupport()
        )
        active = SparkSession.getActiveSession()
        warehouse = str(self.state_dir / "warehouse")
        if active is not None and active.conf.get("spark.sql.warehouse.dir").removeprefix("file:") != warehouse:
            raise LocalStateError(
                "this process already runs a Spark session over other local state "
                f"({active.conf.get('spark.sql.warehouse.dir')}); one process serves one target"
            )
        log.info("starting local Spark with state in %s", self.state_dir)
        return builder.getOrCreate()

    def _acquire_lock(self) -> None:
        """One process at a time may use a target's state (Derby allows one)."""
        if self._lock is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.state_dir / "state.lock", "a+")  # noqa: SIM115 - held while Spark runs
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
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


def _require_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return
    if shutil.which("java") is None:
        raise LocalStateError(
            "Local Spark needs Java 17 or newer and none was found. Install it "
            "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17) "
            "or set JAVA_HOME."
        )
