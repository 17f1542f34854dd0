"""The local implementation: embedded Spark, Derby metastore and an MLflow SQLite store.

All state of a target lives under `<state root>/<target>/` (default `.mlops/<target>/` next to
databricks.yml): `warehouse/`, `metastore_db/`, `mlflow.db`, `artifacts/`, `runs/`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import url2pathname

from filelock import FileLock, Timeout

from mlops_laptop.platform import DEFAULT_SAMPLE_ROWS
from mlops_laptop.platform.spark import local_spark_builder
from mlops_laptop.platform.warehouse import create_table_at, local_table_dir, set_table_location
from mlops_template.platform.base import Platform
from mlops_template.platform.feature_store import FeatureStore
from mlops_template.platform.names import local_database, split_name, to_local
from mlops_template.platform.task_values import LocalTaskValues

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from mlops_template.bundle.deployment import DeployedJobs

log = logging.getLogger(__name__)

SAMPLE_SEED = 42
LOCK_FILE = "state.lock"
LOCK_HOLDER_FILE = "state.lock.holder"  # who holds the lock (the lock file itself is not readable on Windows)
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
        self._lock: FileLock | None = None

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = self._start_spark()
        return self._spark

    @property
    def feature_store(self) -> FeatureStore:
        from mlops_laptop.platform.local_feature_store import LocalFeatureStore

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
            set_table_location(self.spark, table, new_location)
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

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        """The same SQLite database through the Unity Catalog-strict store (`uc_registry`)."""
        from mlops_laptop.platform.uc_registry import registry_uri

        return registry_uri(self.tracking_uri)

    def configure_mlflow(self) -> None:
        import mlflow

        self.state_dir.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)

    def experiment_id(self, experiment_name: str) -> str:
        import mlflow

        self.configure_mlflow()
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        artifacts = self.state_dir / "artifacts" / experiment_name.strip("/").replace("/", "_")
        return mlflow.create_experiment(experiment_name, artifact_location=artifacts.as_uri())

    def deployed_jobs(self, target: str | None = None) -> DeployedJobs:
        """The jobs databricks.yml resolves to for `target` (else `$MLOPS_TARGET`, else its default)."""
        from mlops_laptop.bundle.loader import find_bundle_root, load_bundle
        from mlops_laptop.pipeline_names import deployed_jobs

        return deployed_jobs(load_bundle(find_bundle_root(), target or os.environ.get("MLOPS_TARGET")))

    def _provide_missing_table(self, name: str) -> bool:
        """Locally, the problem spec's `sample_table` is generated (its `sample_source`) on first
        read, as a stand-in for the source table; files the traffic simulator wrote into the
        warehouse (its ground truth) become their table."""
        if self._register_written_files(name):
            return True
        from mlops_template.problem_spec import load_problem

        spec = load_problem()
        if spec.sample_source is None or name != spec.sample_table:
            return False
        log.info("generating %d sample rows of problem %s for %s", self.sample_rows, spec.name, name)
        self.save_table(spec.sample_source(self.spark, self.sample_rows, SAMPLE_SEED), name)
        return True

    def _register_written_files(self, name: str) -> bool:
        """Register Parquet files written straight into the warehouse directory of table `name` (by a
        process without the metastore, e.g. the traffic simulator) as the table; False when none."""
        directory = local_table_dir(self.state_dir, name)
        if not directory.is_dir() or not any(directory.glob("*.parquet")):
            return False
        self.ensure_schema(name)
        create_table_at(self.spark, self.table_name(name), directory)
        return True

    def stop(self) -> None:
        """Stop Spark and release the state lock."""
        if self._spark is not None:
            self._spark.stop()
            self._spark = None
        self._release_lock()

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
        from pyspark.sql import SparkSession

        warehouse = str(self.state_dir / "warehouse")
        builder = (
            local_spark_builder(
                f"mlops-{self.target}",
                warehouse=warehouse,
                shuffle_partitions=self.shuffle_partitions,
                java_options=[f"-Dderby.system.home={self.state_dir}"],
            )
            .config(
                "spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={self.state_dir / 'metastore_db'};create=true",
            )
            .config("spark.driver.memory", os.environ.get("MLOPS_SPARK_DRIVER_MEMORY", "4g"))
            .enableHiveSupport()
        )
        active = SparkSession.getActiveSession()
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
        lock = _state_lock(self.state_dir)
        if (holder := _take_lock(lock, self.state_dir)) is not None:
            raise LocalStateError(
                f"The local state {self.state_dir} is in use by {holder}. "
                "Wait for it to finish or stop it; one process at a time can use a target's "
                "metastore."
            ) from None
        (self.state_dir / LOCK_HOLDER_FILE).write_text(f"process {os.getpid()} ({' '.join(sys.argv)[:200]})")
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _quoted(name: str) -> str:
    """A column name Spark takes literally (dots are not struct paths)."""
    return "`" + name.replace("`", "``") + "`"


def _delete_directory(location: str) -> None:
    """Delete a local directory given as a `file:` URI; a leftover only wastes space."""
    path = url2pathname(urlparse(location).path)
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("could not delete the old table data %s: %s", path, error)


def _state_lock(state_dir: Path) -> FileLock:
    """The state lock of `state_dir` (an OS file lock: released when its process ends)."""
    return FileLock(state_dir / LOCK_FILE, thread_local=False)


def _take_lock(lock: FileLock, state_dir: Path) -> str | None:
    """Take `lock` without waiting: None when taken, else who holds it."""
    try:
        lock.acquire(blocking=False)
    except Timeout:
        holder = state_dir / LOCK_HOLDER_FILE
        return (holder.read_text().strip() if holder.is_file() else "") or "another process"
    return None


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the state lock of `state_dir` (None when free); probes without keeping it."""
    if not (state_dir / LOCK_FILE).exists():
        return None
    lock = _state_lock(state_dir)
    holder = _take_lock(lock, state_dir)
    if holder is None:
        lock.release()
    return holder


def find_java() -> str | None:
    """The `java` local Spark starts: $JAVA_HOME/bin/java, else `java` on the PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    return shutil.which("java")


def _require_java() -> None:
    if find_java() is None:
        raise LocalStateError(f"Local Spark needs Java 17 or newer and none was found: {JAVA_INSTALL_HINT}.")
