"""The local Spark session's common settings: quiet logs, no UI, UTC, Arrow, loopback networking."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def local_spark_builder(
    app_name: str,
    *,
    warehouse: Path | str,
    master: str = "local[*]",
    shuffle_partitions: int = 8,
    java_options: Sequence[str] = (),
) -> SparkSession.Builder:
    """A builder for a Spark session on this machine; callers add their catalog settings.

    Python workers run this interpreter and Spark binds to 127.0.0.1 (unless the environment says
    otherwise); Spark logs only warnings (`log4j2.properties`), plus `java_options` for the driver.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    driver_options = " ".join([*java_options, f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}"])
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.extraJavaOptions", driver_options)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000")  # fewer spark_udf calls
    )
