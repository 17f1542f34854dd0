"""Per time window: drift, quality, error rate and latency, as rows of `<prefix>_drift_metrics`.

One row per (granularity, window start, metric, column), merged by that key, so a re-run replaces
the windows it recomputes (the latest `lookback_windows`, which late requests and late labels
may have changed) and keeps older ones:

- request level (column ""): `requests`, `error_rate`, `latency_p50_ms` / `p95` / `p99` of
  `execution_duration_ms`, over every request, refused ones included;
- prediction level (column ""): `rows` (answered predictions), `labeled_rows`, `rmse`, `mae`
  against the ground truth where it has arrived;
- drift (column = feature, or `prediction`): `psi` and `ks` of the window's rows against the
  baseline; predictions against the baseline's actual fares. Computed on at most
  `max_rows_per_window` rows per window (a stable hash sample), collected to the driver.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
from mlops_template.monitoring.drift import ks_statistic, population_stability_index
from mlops_template.monitoring.tables import granularity_length
from mlops_template.monitoring.unpack import PREDICTION, REQUEST_ID, REQUEST_TIME, ROW_INDEX, SUCCESS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

GRANULARITY = "granularity"
WINDOW_START = "window_start"
WINDOW_END = "window_end"
METRIC = "metric"
COLUMN = "column_name"
VALUE = "value"
COMPUTED_AT = "computed_at"
METRIC_KEYS = [GRANULARITY, WINDOW_START, METRIC, COLUMN]
WINDOW_LEVEL = ""  # the column of metrics about the whole window
METRICS_SCHEMA = T.StructType(
    [
        T.StructField(GRANULARITY, T.StringType()),
        T.StructField(WINDOW_START, T.TimestampType()),
        T.StructField(WINDOW_END, T.TimestampType()),
        T.StructField(METRIC, T.StringType()),
        T.StructField(COLUMN, T.StringType()),
        T.StructField(VALUE, T.DoubleType()),
        T.StructField(COMPUTED_AT, T.TimestampType()),
    ]
)
LATENCY_METRICS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
_QUANTILES = [0.5, 0.95, 0.99]
_WINDOW = "_window"


@dataclass(frozen=True)
class WindowSettings:
    """How windows are cut and how much of each is compared with the baseline."""

    granularity: str = "1 hour"
    lookback_windows: int = 48
    bins: int = 10
    max_rows_per_window: int = 5_000


def _recent_windows(monitoring: DataFrame, settings: WindowSettings) -> DataFrame | None:
    """Rows of the latest `lookback_windows` windows, each with its window; None when empty."""
    windowed = monitoring.withColumn(_WINDOW, F.window(REQUEST_TIME, settings.granularity))
    latest = windowed.agg(F.max(f"{_WINDOW}.start")).first()[0]
    if latest is None:
        return None
    since = latest - (settings.lookback_windows - 1) * granularity_length(settings.granularity)
    return windowed.where(F.col(f"{_WINDOW}.start") >= F.lit(since))


def _bounds() -> list[Column]:
    return [F.col(f"{_WINDOW}.start").alias(WINDOW_START), F.col(f"{_WINDOW}.end").alias(WINDOW_END)]


def _request_metrics(rows: DataFrame) -> pd.DataFrame:
    """Requests, error rate and latency percentiles per window (each request counted once)."""
    latency = F.percentile_approx("execution_duration_ms", _QUANTILES, 10_000)
    return (
        rows.where(F.col(ROW_INDEX) == 0)
        .groupBy(_WINDOW)
        .agg(
            F.count(F.lit(1)).cast("double").alias("requests"),
            F.avg((F.col("status_code") != SUCCESS).cast("double")).alias("error_rate"),
            latency.alias("_latency"),
        )
        .select(
            *_bounds(),
            "requests",
            "error_rate",
            *[F.col("_latency")[i].cast("double").alias(name) for i, name in enumerate(LATENCY_METRICS)],
        )
        .toPandas()
    )


def _answered(rows: DataFrame) -> DataFrame:
    return rows.where((F.col("status_code") == SUCCESS) & F.col(PREDICTION).isNotNull())


def _quality_metrics(rows: DataFrame) -> pd.DataFrame:
    """Answered rows, labelled rows, RMSE and MAE per window."""
    error = F.col(PREDICTION) - F.col(LABEL)
    return (
        _answered(rows)
        .groupBy(_WINDOW)
        .agg(
            F.count(F.lit(1)).cast("double").alias("rows"),
            F.count(LABEL).cast("double").alias("labeled_rows"),
            F.sqrt(F.avg(error * error)).alias("rmse"),
            F.avg(F.abs(error)).alias("mae"),
        )
        .select(*_bounds(), "rows", "labeled_rows", "rmse", "mae")
        .toPandas()
    )


def _window_samples(rows: DataFrame, cap: int) -> pd.DataFrame:
    """Up to `cap` answered rows per window (a stable hash sample): inputs and prediction."""
    order = Window.partitionBy(_WINDOW).orderBy(F.xxhash64(REQUEST_ID, ROW_INDEX))
    return (
        _answered(rows)
        .withColumn("_rank", F.row_number().over(order))
        .where(F.col("_rank") <= cap)
        .select(F.col(f"{_WINDOW}.start").alias(WINDOW_START), *MODEL_INPUT_COLUMNS, PREDICTION)
        .toPandas()
    )


def _drift_rows(sample: pd.DataFrame, baseline: pd.DataFrame, bins: int) -> list[tuple[str, str, float]]:
    """(metric, column, value) of PSI and KS per input, and of predictions vs baseline fares."""
    pairs = [(name, baseline[name], sample[name]) for name in MODEL_INPUT_COLUMNS]
    pairs.append((PREDICTION, baseline[LABEL], sample[PREDICTION]))
    result = []
    for column, expected, actual in pairs:
        expected_values, actual_values = expected.to_numpy("float64"), actual.to_numpy("float64")
        result.append(("psi", column, population_stability_index(expected_values, actual_values, bins)))
        result.append(("ks", column, ks_statistic(expected_values, actual_values)))
    return result


def window_metrics(
    monitoring: DataFrame, baseline: pd.DataFrame, settings: WindowSettings, computed_at: dt.datetime
) -> pd.DataFrame:
    """The metrics of the latest windows of `monitoring`, one row per metric (columns of METRICS_SCHEMA)."""
    rows = _recent_windows(monitoring, settings)
    if rows is None:
        return pd.DataFrame(columns=METRICS_SCHEMA.fieldNames())
    windows = _request_metrics(rows).merge(_quality_metrics(rows), on=[WINDOW_START, WINDOW_END], how="left")
    samples = _window_samples(rows, settings.max_rows_per_window)
    records = []
    for window in windows.sort_values(WINDOW_START).to_dict("records"):
        values = [(name, WINDOW_LEVEL, window[name]) for name in windows.columns[2:]]
        sample = samples[samples[WINDOW_START] == window[WINDOW_START]]
        values += _drift_rows(sample, baseline, settings.bins)
        records += [
            (
                settings.granularity,
                window[WINDOW_START],
                window[WINDOW_END],
                metric,
                column,
                value,
                computed_at,
            )
            for metric, column, value in values
        ]
    log.info("computed metrics of %d windows of %s", len(windows), settings.granularity)
    return pd.DataFrame(records, columns=METRICS_SCHEMA.fieldNames())


def to_spark(spark: SparkSession, metrics: pd.DataFrame) -> DataFrame:
    """The metrics as a Spark DataFrame, NaN (not computable) as null."""
    values = metrics[VALUE].astype("float64")
    frame = metrics.assign(**{VALUE: values.astype(object).where(np.isfinite(values), None)})
    return spark.createDataFrame(frame, schema=METRICS_SCHEMA)


def metrics_frame(metrics: DataFrame, granularity: str) -> pd.DataFrame:
    """The stored metrics of one granularity, as pandas sorted by window."""
    frame = metrics.where(F.col(GRANULARITY) == granularity).toPandas()
    return frame.sort_values([WINDOW_START, METRIC, COLUMN]).reset_index(drop=True)


def window_table(metrics: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """One row per window: window-level metrics as columns, or with `metric` one column per input."""
    if metric is None:
        selected = metrics[metrics[COLUMN] == WINDOW_LEVEL]
        return selected.pivot_table(index=WINDOW_START, columns=METRIC, values=VALUE, dropna=False)
    selected = metrics[metrics[METRIC] == metric]
    return selected.pivot_table(index=WINDOW_START, columns=COLUMN, values=VALUE, dropna=False)
