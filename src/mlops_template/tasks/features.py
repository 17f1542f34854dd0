"""Task `features`: compute the problem's feature tables from the prepared rows, merge them in."""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import model_validator

from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.tasks.common import OptionalTimestamp, PipelineTaskConfig, task_entry_point

log = logging.getLogger(__name__)

PREPARED_PRODUCER = "task prepare_data of job pipeline"


class FeaturesConfig(PipelineTaskConfig):
    # Feature rows with start <= timestamp < end are (re)computed; empty start = unbounded, empty
    # end = now: a window ending later is still open (its trips are not all in yet), and the online
    # store serves the latest row per key, which must be a complete window.
    start: OptionalTimestamp = None
    end: OptionalTimestamp = None

    @model_validator(mode="after")
    def _start_before_end(self) -> FeaturesConfig:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


def run(platform: Platform, config: FeaturesConfig) -> None:
    spec = load_problem()
    rows = platform.read_table(spec.prepared_table_name(config.schema_), produced_by=PREPARED_PRODUCER)
    end = config.end or dt.datetime.now(dt.UTC).replace(tzinfo=None)  # naive UTC, as the tables
    for table in spec.feature_tables:
        name = spec.table(config.schema_, table.name)
        platform.feature_store.write_table(
            name,
            table.compute(rows, config.start, end),
            primary_keys=list(table.primary_keys),
            timestamp_key=table.timestamp_key,
            description=table.description,
        )
        log.info("feature table %s has %d rows", name, platform.read_table(name).count())


main = task_entry_point(FeaturesConfig, run)
