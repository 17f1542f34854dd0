"""Task `drift` of job monitoring: per window drift, quality and service metrics, and an MLflow run.

The baseline is a sample of the prepared table of `--schema` with its features, and the champion's
predictions on it (the model `--model-name`, alias `champion`).
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import Field

from mlops_template.monitoring.baseline import baseline_sample
from mlops_template.monitoring.config import MonitoringThresholds, ThresholdsParam
from mlops_template.monitoring.metrics import METRIC_KEYS, WindowSettings, to_spark, window_metrics
from mlops_template.monitoring.tables import Granularity
from mlops_template.monitoring.tracking import log_monitoring_run
from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.registry.versions import ModelName
from mlops_template.tasks.common import PipelineTaskConfig, task_entry_point

log = logging.getLogger(__name__)


class MonitorDriftConfig(PipelineTaskConfig):
    monitoring_table: str
    metrics_table: str
    model_name: ModelName
    experiment_name: str
    bundle_target: str
    job_run_id: str
    granularity: Granularity = "1 hour"
    lookback_windows: int = Field(default=48, ge=1)
    bins: int = Field(default=10, ge=2)
    baseline_rows: int = Field(default=20_000, ge=100)
    max_rows_per_window: int = Field(default=5_000, ge=100)
    thresholds: ThresholdsParam = Field(default_factory=MonitoringThresholds)

    @property
    def settings(self) -> WindowSettings:
        return WindowSettings(self.granularity, self.lookback_windows, self.bins, self.max_rows_per_window)


def run(platform: Platform, config: MonitorDriftConfig) -> None:
    if not platform.table_exists(config.monitoring_table):
        log.warning(
            "no monitoring table %s (no request unpacked yet): nothing to measure", config.monitoring_table
        )
        return
    spec = load_problem()
    platform.configure_mlflow()
    baseline = baseline_sample(platform, spec, config.schema_, config.baseline_rows, config.model_name)
    computed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    metrics = window_metrics(
        platform.read_table(config.monitoring_table), baseline, spec, config.settings, computed_at
    )
    if metrics.empty:
        log.warning("%s has no rows: nothing to measure", config.monitoring_table)
        return
    platform.merge_table(to_spark(platform.spark, metrics), config.metrics_table, keys=METRIC_KEYS)
    run_id = log_monitoring_run(
        platform.experiment_id(config.experiment_name),
        metrics,
        config.thresholds,
        spec,
        params={
            "problem": spec.name,
            "model_name": config.model_name,
            "monitoring_table": config.monitoring_table,
            "metrics_table": config.metrics_table,
            "granularity": config.granularity,
            "baseline_rows": len(baseline),
        },
        tags={"bundle_target": config.bundle_target, "job_run_id": config.job_run_id},
    )
    log.info("%d windows measured, logged as MLflow run %s", metrics["window_start"].nunique(), run_id)


main = task_entry_point(MonitorDriftConfig, run)
