"""Task `check` of job monitoring: set task value `retrain` ("true" / "false") and its reasons."""

from __future__ import annotations

import logging

from pydantic import Field

from mlops_template.monitoring.check import RetrainDecision, decide, latest_version_time
from mlops_template.monitoring.config import MonitoringThresholds, ThresholdsParam
from mlops_template.monitoring.metrics import metrics_frame
from mlops_template.monitoring.tables import Granularity
from mlops_template.platform import Platform
from mlops_template.tasks.common import TaskConfig, task_entry_point

log = logging.getLogger(__name__)


class MonitorCheckConfig(TaskConfig):
    metrics_table: str
    granularity: Granularity = "1 hour"
    model_name: str = ""  # empty: judge windows from before the latest training too
    thresholds: ThresholdsParam = Field(default_factory=MonitoringThresholds)


def _decision(platform: Platform, config: MonitorCheckConfig) -> RetrainDecision:
    if not platform.table_exists(config.metrics_table):
        return RetrainDecision(False, [f"no drift metrics yet in {config.metrics_table}"])
    metrics = metrics_frame(platform.read_table(config.metrics_table), config.granularity)
    not_before = None
    if config.model_name:
        platform.configure_mlflow()
        not_before = latest_version_time(config.model_name)
    return decide(metrics, config.thresholds, not_before)


def run(platform: Platform, config: MonitorCheckConfig) -> None:
    decision = _decision(platform, config)
    log.info("retrain: %s; %s", decision.retrain, "; ".join(decision.reasons))
    platform.task_values.set("retrain", "true" if decision.retrain else "false")
    platform.task_values.set("reasons", decision.reasons)


main = task_entry_point(MonitorCheckConfig, run)
