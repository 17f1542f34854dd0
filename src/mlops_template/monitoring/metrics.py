"""Per time window: drift, quality, error rate and latency, as rows of `<prefix>_drift_metrics`.

One row per (granularity, window start, metric, column), merged by that key, so a re-run replaces
the windows it recomputes (the latest `lookback_windows`, which late requests and late labels
may have changed) and keeps older ones:

- request level (column ""): `requests`, `error_rate`, `latency_p50_ms` / `p95` / `p99` of
  `execution_duration_ms`, over every request, refused ones included;
- prediction level (column ""): `rows` (answered predictions), `labeled_rows`, and the task
  type's metrics (training's `evaluate`) against the ground truth where it has arrived:
  regression rmse, mae, r2; binary classification roc_auc (NaN while a window has one class),
  log_loss, brier, accuracy at the spec's threshold, on the probability of label 1;
- drift (column = monitored input, or `prediction`): `psi` and `ks` of the window's rows against
  the baseline (a string input: PSI over its values, no KS); predictions against the champion's
  predictions on the baseline.

Drift and quality are computed on at most `max_rows_per_window` answered, and as many labelled,
rows per window (stable hash samples), collected to the driver.
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

from mlops_template.monitoring.drift import categorical_psi, ks_statistic, population_stability_index
from mlops_template.monitoring.tables import granularity_length
from mlops_template.monitoring.unpack import PREDICTION, REQUEST_ID, REQUEST_TIME, ROW_INDEX, SUCCESS
from mlops_template.problem_spec import ProblemSpec
from mlops_template.training.evaluate import evaluate

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


def _counts(rows: DataFrame, label: str) -> pd.DataFrame:
    """Answered rows and labelled answered rows per window."""
    return (
        _answered(rows)
        .groupBy(_WINDOW)
        .agg(
            F.count(F.lit(1)).cast("double").alias("rows"),
            F.count(label).cast("double").alias("labeled_rows"),
        )
        .select(*_bounds(), "rows", "labeled_rows")
        .toPandas()
    )


def _sample(rows: DataFrame, cap: int, columns: list[str]) -> pd.DataFrame:
    """Up to `cap` of `rows` per window (a stable hash sample): the window start and `columns`."""
    order = Window.partitionBy(_WINDOW).orderBy(F.xxhash64(REQUEST_ID, ROW_INDEX))
    return (
        rows.withColumn("_rank", F.row_number().over(order))
        .where(F.col("_rank") <= cap)
        .select(F.col(f"{_WINDOW}.start").alias(WINDOW_START), *columns)
        .toPandas()
    )


def quality(spec: ProblemSpec, labels: pd.Series, predicted: pd.Series) -> dict[str, float]:
    """The task type's metrics of one window's labelled predictions; NaN without labels."""
    if labels.empty:
        return {name: float("nan") for name in spec.metric_names}
    actual = labels.to_numpy("float64")
    if spec.is_classifier:
        actual = actual.astype("int64")
    return dict(evaluate(spec, actual, predicted.to_numpy("float64"), allow_one_class=True).values)


def drift_rows(
    sample: pd.DataFrame, baseline: pd.DataFrame, spec: ProblemSpec, bins: int
) -> list[tuple[str, str, float]]:
    """(metric, column, value) of PSI and KS per monitored input, and of the predictions."""
    types = {model_input.name: model_input.type for model_input in spec.model_inputs}
    result = []
    for column in [*spec.drift_columns, PREDICTION]:
        expected, actual = baseline[column], sample[column]
        if types.get(column) == "string":
            result += [("psi", column, categorical_psi(expected, actual)), ("ks", column, float("nan"))]
            continue
        expected_values, actual_values = expected.to_numpy("float64"), actual.to_numpy("float64")
        result.append(("psi", column, population_stability_index(expected_values, actual_values, bins)))
        result.append(("ks", column, ks_statistic(expected_values, actual_values)))
    return result


def window_metrics(
    monitoring: DataFrame,
    baseline: pd.DataFrame,
    spec: ProblemSpec,
    settings: WindowSettings,
    computed_at: dt.datetime,
) -> pd.DataFrame:
    """The metrics of the latest windows of `monitoring`, one row per metric (columns of METRICS_SCHEMA).

    `baseline` holds the monitored inputs and the champion's `prediction` (`baseline.baseline_sample`).
    """
    rows = _recent_windows(monitoring, settings)
    if rows is None:
        return pd.DataFrame(columns=METRICS_SCHEMA.fieldNames())
    windows = _request_metrics(rows).merge(
        _counts(rows, spec.label), on=[WINDOW_START, WINDOW_END], how="left"
    )
    answered = _answered(rows)
    samples = _sample(answered, settings.max_rows_per_window, [*spec.drift_columns, PREDICTION])
    labelled = _sample(
        answered.where(F.col(spec.label).isNotNull()), settings.max_rows_per_window, [PREDICTION, spec.label]
    )
    records = []
    for window in windows.sort_values(WINDOW_START).to_dict("records"):
        values = [(name, WINDOW_LEVEL, window[name]) for name in windows.columns[2:]]
        scored = labelled[labelled[WINDOW_START] == window[WINDOW_START]]
        values += [
            (name, WINDOW_LEVEL, value)
            for name, value in quality(spec, scored[spec.label], scored[PREDICTION]).items()
        ]
        sample = samples[samples[WINDOW_START] == window[WINDOW_START]]
        values += drift_rows(sample, baseline, spec, settings.bins)
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
