"""Task `unpack` of job monitoring: the endpoint's inference table -> one row per prediction."""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import Field

from mlops_template.monitoring.ground_truth import read_labels
from mlops_template.monitoring.tables import read_fresh
from mlops_template.monitoring.unpack import unpack_into
from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.tasks.common import PipelineTaskConfig, task_entry_point

log = logging.getLogger(__name__)

PAYLOAD_PRODUCER = (
    "the endpoint with inference tables on (task deploy of job pipeline, inference_table_enabled), "
    "then send it traffic"
)


class MonitorUnpackConfig(PipelineTaskConfig):
    """`--schema`: the feature tables' `catalog.schema`, for the rows whose looked-up features the
    endpoint did not log."""

    payload_table: str
    monitoring_table: str
    ground_truth_table: str = ""  # empty or absent: predictions stay unlabeled
    inference_table_enabled: bool = True
    late_arrival_minutes: int = Field(default=120, ge=0)


def run(platform: Platform, config: MonitorUnpackConfig) -> None:
    if not config.inference_table_enabled:
        log.warning(
            "inference tables are disabled for this target (inference_table_enabled=false): "
            "nothing to unpack; deploy with --var inference_table_enabled=true to monitor"
        )
        return
    spec = load_problem()
    payload = read_fresh(platform, config.payload_table, produced_by=PAYLOAD_PRODUCER)
    labels = read_labels(platform, config.ground_truth_table, spec)
    result = unpack_into(
        platform,
        payload,
        config.monitoring_table,
        labels,
        late_arrival=dt.timedelta(minutes=config.late_arrival_minutes),
        spec=spec,
        feature_schema=config.schema_,
    )
    log.info(
        "unpacked %d requests (%d rows), completed %d older rows",
        result.requests,
        result.rows,
        result.completed,
    )


main = task_entry_point(MonitorUnpackConfig, run)
