"""Task `quality_monitor` of job monitoring: create or update the monitoring table's quality monitor.

It runs after `unpack`, which creates the table, so a first deploy to an empty workspace needs no
table and no second deploy. Enabled per target (`quality_monitor_enabled`); off where monitors are
not offered or inference tables are off. The profile follows the problem spec: a regression
monitors `prediction`, a binary classifier its `predicted_label` (at the spec's threshold), both
against the spec's label.
"""

from __future__ import annotations

import logging

from pydantic import Field

from mlops_template.monitoring.quality_monitor import (
    InferenceLogSpec,
    ProblemType,
    QualityMonitorSpec,
    quality_monitors,
)
from mlops_template.monitoring.unpack import MODEL_VERSION, PREDICTED_LABEL, PREDICTION, REQUEST_TIME
from mlops_template.platform import Platform
from mlops_template.problem_spec import ProblemSpec, load_problem
from mlops_template.tasks.common import TaskConfig, task_entry_point

log = logging.getLogger(__name__)


class QualityMonitorConfig(TaskConfig):
    monitoring_table: str
    output_schema: str  # catalog.schema of the monitor's metric tables
    assets_dir: str  # workspace folder of the monitor's dashboard
    enabled: bool = False
    inference_table_enabled: bool = True
    granularities: str = Field(default="1 day", min_length=1)  # comma-separated
    slicing_exprs: str = ""  # comma-separated column expressions
    schedule: str = ""  # quartz cron expression (UTC); empty: refreshed on demand

    def spec(self, problem: ProblemSpec | None = None) -> QualityMonitorSpec:
        """The monitor of the monitoring table for `problem` (default: the loaded problem spec)."""
        problem = problem or load_problem()
        return QualityMonitorSpec(
            table_name=self.monitoring_table,
            output_schema_name=self.output_schema,
            assets_dir=self.assets_dir,
            inference_log=InferenceLogSpec(
                problem_type=problem_type(problem),
                timestamp_col=REQUEST_TIME,
                model_id_col=MODEL_VERSION,
                prediction_col=PREDICTED_LABEL if problem.is_classifier else PREDICTION,
                label_col=problem.label,
                granularities=_items(self.granularities),
            ),
            slicing_exprs=_items(self.slicing_exprs),
            schedule_cron=self.schedule,
        )


def problem_type(problem: ProblemSpec) -> ProblemType:
    """Lakehouse Monitoring's problem type of the spec's task type."""
    return "PROBLEM_TYPE_CLASSIFICATION" if problem.is_classifier else "PROBLEM_TYPE_REGRESSION"


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def run(platform: Platform, config: QualityMonitorConfig) -> None:
    if not config.enabled:
        log.info("quality monitors are off for this target (quality_monitor_enabled=false)")
        return
    if not config.inference_table_enabled:
        log.warning("inference tables are off (inference_table_enabled=false): no table to monitor")
        return
    outcome = quality_monitors(platform).apply(config.spec())
    log.info("quality monitor of %s: %s", config.monitoring_table, outcome)


main = task_entry_point(QualityMonitorConfig, run)
