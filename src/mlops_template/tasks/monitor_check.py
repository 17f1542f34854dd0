"""Task `check` of job monitoring: whether to retrain, and why.

A notebook task (notebooks/tasks/monitor_check.py) runs it and sets the task values `retrain`
("true" / "false") and `reasons` that the job's condition task reads: only notebooks may set
task values on Databricks.
"""

from __future__ import annotations

import logging

from pydantic import Field

from mlops_template.monitoring.check import RetrainDecision, decide, latest_version_time
from mlops_template.monitoring.config import MonitoringThresholds, ThresholdsParam
from mlops_template.monitoring.metrics import metrics_frame
from mlops_template.monitoring.tables import Granularity
from mlops_template.platform import Platform
from mlops_template.tasks.common import TaskConfig

log = logging.getLogger(__name__)


class MonitorCheckConfig(TaskConfig):
    metrics_table: str
    granularity: Granularity = "1 hour"
    model_name: str = ""  # empty: judge windows from before the latest training too
    thresholds: ThresholdsParam = Field(default_factory=MonitoringThresholds)


def decide_retrain(platform: Platform, config: MonitorCheckConfig) -> RetrainDecision:
    """The retrain decision over the drift metrics table (no metrics yet: no retraining)."""
    if not platform.table_exists(config.metrics_table):
        decision = RetrainDecision(False, [f"no drift metrics yet in {config.metrics_table}"])
    else:
        metrics = metrics_frame(platform.read_table(config.metrics_table), config.granularity)
        not_before = None
        if config.model_name:
            platform.configure_mlflow()
            not_before = latest_version_time(config.model_name)
        decision = decide(metrics, config.thresholds, not_before)
    log.info("retrain: %s; %s", decision.retrain, "; ".join(decision.reasons))
    return decision
