"""The live experiment, variant by variant: service, predictions and error against the ground truth,
and the rollout decision (promote, roll back or keep collecting).

Rows are those of the monitoring table since the experiment started (`experiment_started_at`, set
when the endpoint first serves the challenger). A row's variant is the sticky A/B model's `variant`
column when set, else champion or challenger by the (entity name, version) its `served_entity_id`
names in `system.serving.served_entities`: A/B model versions belong to another registered model
(`<model>_ab`) whose numbers can equal the base model's, so the version alone cannot tell. Rows of
neither variant (another model, a refused A/B request, a served entity not recorded yet) are
counted as unassigned. Under an A/B test both variants answer through one served entity, so a
refused request names no variant: its errors do not count against either.

Spark aggregates the rows (they can be many); the labelled rows of each variant, a seeded sample of
at most `max_labelled_rows`, come to pandas, where SciPy's bootstrap gives each variant's RMSE and
MAE and the challenger's minus the champion's (two independent samples) with their confidence
intervals. A classifier's prediction is P(label 1): its RMSE and MAE are those of the probability
(the RMSE is the square root of the Brier score).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pyspark.errors import AnalysisException
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from scipy import stats

from mlops_template.jsonparams import validated_json_object
from mlops_template.monitoring.unpack import PREDICTION, REQUEST_ID, REQUEST_TIME, ROW_INDEX, SUCCESS
from mlops_template.platform.base import MissingTableError
from mlops_template.registry.experiment import Experiment
from mlops_template.serving.served_entities import SERVED_ENTITIES_TABLE
from mlops_template.serving.spec import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform

log = logging.getLogger(__name__)

VARIANTS = (CHAMPION, CHALLENGER)
ERROR_METRICS = ("rmse", "mae")
ASSIGNED = "assigned_variant"
SERVED_ENTITY_ID = "served_entity_id"
SERVED_ENTITIES_PRODUCER = "the deploy task (it records the endpoint's served entities)"
SERVER_ERROR = 500
_BOOTSTRAP_VALUES_PER_BATCH = 10_000_000  # bounds the resampled values held at once (80 MB)

Action = Literal["promote", "rollback", "continue"]


class RolloutParamsError(ValueError):
    """The rollout parameters are not a JSON object of known, valid settings."""


class RolloutParams(BaseModel):
    """When the rollout job promotes the challenger, rolls it back, or keeps collecting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_labelled: int = Field(default=500, ge=2, description="labelled predictions each variant needs")
    min_duration_hours: float = Field(default=24.0, ge=0, description="promote no earlier than this")
    min_requests: int = Field(
        default=100, ge=1, description="challenger requests before its error rate and latency are judged"
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="level of the bootstrap intervals")
    max_error_rate: float = Field(default=0.05, ge=0, le=1, description="challenger's limit (0..1)")
    max_p95_latency_ms: float = Field(default=1000.0, gt=0, description="challenger's p95 latency limit")
    decision_metric: Literal["rmse", "mae"] = "rmse"
    bootstrap_resamples: int = Field(default=2000, ge=100)
    max_labelled_rows: int = Field(
        default=10_000, ge=100, description="labelled rows per variant bootstrapped (a seeded sample)"
    )
    seed: int = 0

    @classmethod
    def from_json(cls, text: str) -> RolloutParams:
        """Defaults overridden by a JSON object such as `{"min_labelled": 200}`; "" means defaults."""
        return validated_json_object(cls, text, "rollout parameters", RolloutParamsError)


def _parse_json_string(value: Any) -> Any:
    return RolloutParams.from_json(value) if isinstance(value, str) else value


# A task config field filled from a JSON object string (the `--rollout-params` job parameter).
RolloutParamsParam = Annotated[RolloutParams, BeforeValidator(_parse_json_string)]


@dataclass(frozen=True)
class Interval:
    """An estimate and its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class VariantMetrics:
    """One variant's requests, predictions and error on its labelled rows since the experiment began."""

    variant: str
    version: int
    requests: int = 0
    errors: int = 0  # requests the server failed (5xx); client mistakes (4xx) are not counted
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    predictions: int = 0
    prediction_mean: float | None = None
    prediction_std: float | None = None
    prediction_p05: float | None = None
    prediction_p50: float | None = None
    prediction_p95: float | None = None
    labelled: int = 0  # predictions whose ground truth arrived
    error: dict[str, Interval] = field(default_factory=dict)  # rmse, mae (absent below 2 labelled rows)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class RolloutAnalysis:
    """Both variants of a running experiment, and the challenger's error minus the champion's."""

    experiment: Experiment
    computed_at: dt.datetime
    confidence: float
    variants: dict[str, VariantMetrics]
    difference: dict[str, Interval]  # challenger minus champion, per error metric
    unassigned_rows: int = 0

    @property
    def champion(self) -> VariantMetrics:
        return self.variants[CHAMPION]

    @property
    def challenger(self) -> VariantMetrics:
        return self.variants[CHALLENGER]


@dataclass(frozen=True)
class RolloutDecision:
    action: Action
    reason: str


# ----------------------------------------------------------------------------------------------
# Reading and aggregating the rows (Spark)


def served_entity_names(platform: Platform) -> DataFrame | None:
    """`served_entity_id` -> `entity_name`, `entity_version` (the latest row of each id), or None
    with a warning when `system.serving.served_entities` cannot be read (then only A/B rows,
    which name their variant, are assigned)."""
    try:
        entities = platform.read_table(SERVED_ENTITIES_TABLE, produced_by=SERVED_ENTITIES_PRODUCER)
        latest = Window.partitionBy(SERVED_ENTITY_ID).orderBy(F.col("change_time").desc())
        names = (
            entities.withColumn("_change", F.row_number().over(latest))
            .where(F.col("_change") == 1)
            .select(
                SERVED_ENTITY_ID,
                F.lower("entity_name").alias("entity_name"),
                F.col("entity_version").cast("string").alias("entity_version"),
            )
        )
        names.schema  # noqa: B018 - analysed now: a missing privilege fails here
    except (MissingTableError, AnalysisException) as error:
        log.warning(
            "rows are assigned to a variant by their served entity, and %s cannot be read: only A/B "
            "rows are assigned. On Databricks an account admin grants the job's principal SELECT on it. (%s)",
            SERVED_ENTITIES_TABLE,
            str(error).splitlines()[0],
        )
        return None
    return names


def assign_variants(rows: DataFrame, entities: DataFrame | None, experiment: Experiment) -> DataFrame:
    """`rows` with column `assigned_variant`: the A/B `variant` when set, else champion or challenger
    by the served entity's (name, version); null for rows of neither."""
    from_ab = F.when(F.col("variant").isin(*VARIANTS), F.col("variant"))
    if entities is None:
        return rows.withColumn(ASSIGNED, from_ab)
    base_model = F.col("entity_name") == experiment.model_name.lower()
    by_entity = F.when(
        base_model & (F.col("entity_version") == str(experiment.champion)), F.lit(CHAMPION)
    ).when(base_model & (F.col("entity_version") == str(experiment.challenger)), F.lit(CHALLENGER))
    joined = rows.join(F.broadcast(entities), on=SERVED_ENTITY_ID, how="left")
    return joined.withColumn(ASSIGNED, F.coalesce(from_ab, by_entity)).drop("entity_name", "entity_version")


def _service(assigned: DataFrame) -> dict[str, dict[str, Any]]:
    """Per variant: requests, failed requests and latency percentiles (one value per request)."""
    requests = assigned.where(F.col(ASSIGNED).isNotNull()).groupBy(ASSIGNED, REQUEST_ID)
    per_request = requests.agg(
        F.max("status_code").alias("status"), F.max("execution_duration_ms").alias("duration")
    )
    # The server's faults only: a client's mistake (4xx) is refused alike by either variant.
    failed = F.coalesce(F.col("status") >= SERVER_ERROR, F.lit(True)).cast("long")
    rows = (
        per_request.groupBy(ASSIGNED)
        .agg(
            F.count("*").alias("requests"),
            F.sum(failed).alias("errors"),
            F.percentile_approx("duration", [0.5, 0.95]).alias("latency"),
        )
        .collect()
    )
    return {
        row[ASSIGNED]: {
            "requests": row["requests"],
            "errors": row["errors"],
            "latency_p50_ms": _float(row["latency"][0]) if row["latency"] else None,
            "latency_p95_ms": _float(row["latency"][1]) if row["latency"] else None,
        }
        for row in rows
    }


def _answered(label: str) -> tuple[Any, Any]:
    answered = (F.col("status_code") == SUCCESS) & F.col(PREDICTION).isNotNull()
    return answered, answered & F.col(label).isNotNull()


def _predictions(assigned: DataFrame, label: str) -> tuple[dict[str, dict[str, Any]], int]:
    """Per variant: predictions, their distribution and how many are labelled; and the unassigned rows."""
    answered, labelled = _answered(label)
    prediction = F.when(answered, F.col(PREDICTION))
    rows = (
        assigned.groupBy(ASSIGNED)
        .agg(
            F.count("*").alias("rows"),
            F.count(prediction).alias("predictions"),
            F.mean(prediction).alias("prediction_mean"),
            F.stddev_samp(prediction).alias("prediction_std"),
            F.percentile_approx(prediction, [0.05, 0.5, 0.95]).alias("quantiles"),
            F.count(F.when(labelled, 1)).alias("labelled"),
        )
        .collect()
    )
    unassigned = sum(row["rows"] for row in rows if row[ASSIGNED] is None)
    quantiles = ("prediction_p05", "prediction_p50", "prediction_p95")
    return {
        row[ASSIGNED]: {
            "predictions": row["predictions"],
            "prediction_mean": _float(row["prediction_mean"]),
            "prediction_std": _float(row["prediction_std"]),
            **dict(zip(quantiles, [_float(q) for q in row["quantiles"] or [None] * 3], strict=True)),
            "labelled": row["labelled"],
        }
        for row in rows
        if row[ASSIGNED] is not None
    }, unassigned


def labelled_sample(assigned: DataFrame, label: str, params: RolloutParams) -> pd.DataFrame:
    """Each variant's labelled predictions (`variant`, `prediction`, `label`), a seeded sample of at
    most `max_labelled_rows` per variant."""
    _, labelled = _answered(label)
    order = Window.partitionBy(ASSIGNED).orderBy(F.xxhash64(REQUEST_ID, ROW_INDEX, F.lit(params.seed)))
    sample = (
        assigned.where(labelled & F.col(ASSIGNED).isNotNull())
        .withColumn("_draw", F.row_number().over(order))
        .where(F.col("_draw") <= params.max_labelled_rows)
        .select(
            F.col(ASSIGNED).alias("variant"),
            F.col(PREDICTION).alias("prediction"),
            F.col(label).cast("double").alias("label"),
        )
    )
    return sample.toPandas()


def _float(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


# ----------------------------------------------------------------------------------------------
# Error with bootstrap confidence intervals (pandas, SciPy)


def _rmse(squared_errors: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sqrt(np.mean(squared_errors, axis=axis))


def _mae(absolute_errors: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(absolute_errors, axis=axis)


# Each metric: the per-row values it averages, and the statistic over them.
_METRICS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[..., np.ndarray]]] = {
    "rmse": (np.square, _rmse),
    "mae": (np.abs, _mae),
}


def bootstrap_interval(
    samples: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], params: RolloutParams
) -> Interval | None:
    """`statistic` of the samples with its BCa bootstrap interval (independent samples, seeded);
    None when a sample has fewer than 2 values."""
    if any(len(sample) < 2 for sample in samples):
        return None
    estimate = float(statistic(*samples, axis=-1))
    if all(np.ptp(sample) == 0 for sample in samples):  # nothing varies: neither does a resample
        return Interval(estimate, estimate, estimate)
    batch = max(1, _BOOTSTRAP_VALUES_PER_BATCH // sum(len(sample) for sample in samples))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            samples,
            statistic,
            n_resamples=params.bootstrap_resamples,
            batch=batch,
            vectorized=True,
            paired=False,
            confidence_level=params.confidence,
            method="BCa",
            rng=np.random.default_rng(params.seed),
        )
    low, high = result.confidence_interval
    return Interval(estimate, float(low), float(high))


def _difference(statistic: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def challenger_minus_champion(challenger: np.ndarray, champion: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(challenger, axis=axis) - statistic(champion, axis=axis)

    return challenger_minus_champion


def error_intervals(
    sample: pd.DataFrame, params: RolloutParams
) -> tuple[dict[str, dict[str, Interval]], dict[str, Interval]]:
    """Per variant, RMSE and MAE of `labelled_sample` rows with intervals; and the challenger's minus
    the champion's, per metric."""
    errors = {
        variant: (rows["prediction"] - rows["label"]).to_numpy(dtype="float64")
        for variant, rows in sample.groupby("variant")
    }
    empty = np.empty(0)
    per_variant: dict[str, dict[str, Interval]] = {variant: {} for variant in VARIANTS}
    difference: dict[str, Interval] = {}
    for name, (values, statistic) in _METRICS.items():
        by_variant = {variant: values(errors.get(variant, empty)) for variant in VARIANTS}
        for variant in VARIANTS:
            if (interval := bootstrap_interval((by_variant[variant],), statistic, params)) is not None:
                per_variant[variant][name] = interval
        pair = (by_variant[CHALLENGER], by_variant[CHAMPION])
        if (interval := bootstrap_interval(pair, _difference(statistic), params)) is not None:
            difference[name] = interval
    return per_variant, difference


# ----------------------------------------------------------------------------------------------
# The analysis


def analyse_rows(
    rows: DataFrame,
    entities: DataFrame | None,
    experiment: Experiment,
    label: str,
    params: RolloutParams,
    computed_at: dt.datetime,
) -> RolloutAnalysis:
    """The analysis of monitoring `rows` (already limited to the experiment's time)."""
    assigned = assign_variants(rows, entities, experiment)
    service = _service(assigned)
    predictions, unassigned = _predictions(assigned, label)
    per_variant, difference = error_intervals(labelled_sample(assigned, label, params), params)
    versions = {CHAMPION: experiment.champion, CHALLENGER: experiment.challenger}
    variants = {
        variant: VariantMetrics(
            variant=variant,
            version=versions[variant],
            **service.get(variant, {}),
            **predictions.get(variant, {}),
            error=per_variant[variant],
        )
        for variant in VARIANTS
    }
    return RolloutAnalysis(experiment, computed_at, params.confidence, variants, difference, unassigned)


def no_rows_yet(experiment: Experiment, params: RolloutParams, computed_at: dt.datetime) -> RolloutAnalysis:
    """The analysis before any row: the experiment has not started or nothing was unpacked."""
    variants = {
        CHAMPION: VariantMetrics(CHAMPION, experiment.champion),
        CHALLENGER: VariantMetrics(CHALLENGER, experiment.challenger),
    }
    return RolloutAnalysis(experiment, computed_at, params.confidence, variants, {})


def analyse(
    platform: Platform,
    monitoring_table: str,
    experiment: Experiment,
    label: str,
    params: RolloutParams,
    computed_at: dt.datetime,
) -> RolloutAnalysis:
    """The running experiment's analysis over the monitoring table's rows since it started."""
    if experiment.started_at is None:
        log.info("the endpoint does not serve challenger version %d yet", experiment.challenger)
        return no_rows_yet(experiment, params, computed_at)
    if not platform.table_exists(monitoring_table):
        log.warning("no monitoring table %s yet (no request unpacked)", monitoring_table)
        return no_rows_yet(experiment, params, computed_at)
    since = F.lit(experiment.started_at).cast("timestamp")
    rows = platform.read_table(monitoring_table).where(F.col(REQUEST_TIME) >= since)
    analysis = analyse_rows(rows, served_entity_names(platform), experiment, label, params, computed_at)
    if analysis.unassigned_rows:
        log.info("%d rows since the experiment began belong to neither variant", analysis.unassigned_rows)
    return analysis


# ----------------------------------------------------------------------------------------------
# The decision (pure)


def _interval_text(interval: Interval, confidence: float) -> str:
    return f"{interval.estimate:+.4g} ({confidence:.0%} CI {interval.low:+.4g} to {interval.high:+.4g})"


def decide(analysis: RolloutAnalysis, params: RolloutParams, now: dt.datetime) -> RolloutDecision:
    """Promote when the challenger's error (`decision_metric`) is lower with the configured confidence
    (the difference's interval below 0) after `min_labelled` labelled predictions per variant and
    `min_duration_hours`; roll back when it is higher with that confidence (after `min_labelled`:
    no need to wait longer for a clearly worse model) or when the challenger breaks the service limits
    (judged after `min_requests`); otherwise keep collecting, saying what is missing."""
    experiment, challenger = analysis.experiment, analysis.challenger
    name = f"challenger version {experiment.challenger}"
    if experiment.started_at is None:
        return RolloutDecision("continue", f"the endpoint does not serve {name} yet")
    if challenger.requests >= params.min_requests:
        rate = challenger.error_rate or 0.0
        if rate > params.max_error_rate:
            return RolloutDecision(
                "rollback",
                f"{name} failed {rate:.1%} of {challenger.requests} requests "
                f"(limit {params.max_error_rate:.1%})",
            )
        p95 = challenger.latency_p95_ms
        if p95 is not None and p95 > params.max_p95_latency_ms:
            return RolloutDecision(
                "rollback",
                f"{name}'s p95 latency is {p95:.0f} ms (limit {params.max_p95_latency_ms:.0f} ms)",
            )
    metric = params.decision_metric
    missing = [
        f"{variant.labelled} of {params.min_labelled} labelled {variant.variant} predictions"
        for variant in analysis.variants.values()
        if variant.labelled < params.min_labelled
    ]
    difference = analysis.difference.get(metric)
    compared = (
        f"{name} minus champion version {experiment.champion} {metric} "
        f"{_interval_text(difference, analysis.confidence)}"
        if difference is not None
        else ""
    )
    if not missing and difference is not None and difference.low > 0:
        return RolloutDecision("rollback", f"worse: {compared}")
    elapsed = now - experiment.started_at
    if elapsed < dt.timedelta(hours=params.min_duration_hours):
        missing.append(f"{elapsed.total_seconds() / 3600:.1f} of {params.min_duration_hours:g} hours")
    if missing:
        return RolloutDecision("continue", "collecting: " + "; ".join(missing))
    if difference is not None and difference.high < 0:
        return RolloutDecision("promote", f"better: {compared}")
    return RolloutDecision("continue", f"no clear difference yet: {compared or 'no labelled rows'}")


# ----------------------------------------------------------------------------------------------
# The results table


ROLLOUT_METRICS_SCHEMA = T.StructType(
    [
        T.StructField("computed_at", T.TimestampType()),
        T.StructField("model_name", T.StringType()),
        T.StructField("champion_version", T.IntegerType()),
        T.StructField("challenger_version", T.IntegerType()),
        T.StructField("experiment_started_at", T.TimestampType()),
        T.StructField("variant", T.StringType()),
        T.StructField("version", T.IntegerType()),
        *[T.StructField(name, T.LongType()) for name in ("requests", "errors")],
        T.StructField("error_rate", T.DoubleType()),
        *[T.StructField(name, T.DoubleType()) for name in ("latency_p50_ms", "latency_p95_ms")],
        T.StructField("predictions", T.LongType()),
        *[
            T.StructField(f"prediction_{name}", T.DoubleType())
            for name in ("mean", "std", "p05", "p50", "p95")
        ],
        T.StructField("labelled", T.LongType()),
        *[
            T.StructField(f"{metric}{part}", T.DoubleType())
            for metric in ERROR_METRICS
            for part in ("", "_low", "_high", "_difference", "_difference_low", "_difference_high")
        ],
        T.StructField("confidence", T.DoubleType()),
        T.StructField("decision", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("applied", T.BooleanType()),
    ]
)


def _interval_columns(prefix: str, interval: Interval | None) -> dict[str, float | None]:
    values = (None, None, None) if interval is None else (interval.estimate, interval.low, interval.high)
    return dict(zip((prefix, f"{prefix}_low", f"{prefix}_high"), values, strict=True))


def variant_values(analysis: RolloutAnalysis) -> dict[str, dict[str, float | int | None]]:
    """Each variant's numbers; the challenger's include its difference from the champion."""
    values = {}
    for variant in analysis.variants.values():
        numbers: dict[str, float | int | None] = {
            "version": variant.version,
            "requests": variant.requests,
            "errors": variant.errors,
            "error_rate": variant.error_rate,
            "latency_p50_ms": variant.latency_p50_ms,
            "latency_p95_ms": variant.latency_p95_ms,
            "predictions": variant.predictions,
            "prediction_mean": variant.prediction_mean,
            "prediction_std": variant.prediction_std,
            "prediction_p05": variant.prediction_p05,
            "prediction_p50": variant.prediction_p50,
            "prediction_p95": variant.prediction_p95,
            "labelled": variant.labelled,
        }
        for metric in ERROR_METRICS:
            difference = analysis.difference.get(metric) if variant.variant == CHALLENGER else None
            numbers |= _interval_columns(metric, variant.error.get(metric))
            numbers |= _interval_columns(f"{metric}_difference", difference)
        values[variant.variant] = numbers
    return values


def metrics_rows(analysis: RolloutAnalysis, decision: RolloutDecision, applied: bool) -> list[dict[str, Any]]:
    """The rows of the rollout metrics table: one per variant."""
    experiment = analysis.experiment
    return [
        {
            "computed_at": analysis.computed_at,
            "model_name": experiment.model_name,
            "champion_version": experiment.champion,
            "challenger_version": experiment.challenger,
            "experiment_started_at": experiment.started_at,
            "variant": variant,
            **numbers,
            "confidence": analysis.confidence,
            "decision": decision.action,
            "reason": decision.reason,
            "applied": applied,
        }
        for variant, numbers in variant_values(analysis).items()
    ]


def save_rollout_metrics(
    platform: Platform, table: str, analysis: RolloutAnalysis, decision: RolloutDecision, applied: bool
) -> None:
    """Append this run's rows (one per variant) to the rollout metrics table."""
    rows = platform.spark.createDataFrame(metrics_rows(analysis, decision, applied), ROLLOUT_METRICS_SCHEMA)
    platform.save_table(rows, table, mode="append")
