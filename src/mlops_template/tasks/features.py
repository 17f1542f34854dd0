"""Task `features`: compute the pickup and dropoff features from the trips, merge them into their tables."""

from __future__ import annotations

import logging

from pydantic import model_validator

from mlops_template.features.columns import FEATURE_KEY, FEATURE_TIMESTAMP
from mlops_template.features.transforms import dropoff_features, pickup_features
from mlops_template.platform import Platform
from mlops_template.tasks.common import OptionalTimestamp, TaskConfig, task_entry_point

log = logging.getLogger(__name__)

PICKUP_DESCRIPTION = "Taxi pickups per zip over 1-hour windows every 15 minutes (ts = window end)."
DROPOFF_DESCRIPTION = "Taxi dropoffs per zip over 30-minute windows (ts = window end)."


class FeaturesConfig(TaskConfig):
    trips_table: str
    pickup_features_table: str
    dropoff_features_table: str
    # Feature rows with start <= ts < end are (re)computed; empty = unbounded.
    start: OptionalTimestamp = None
    end: OptionalTimestamp = None

    @model_validator(mode="after")
    def _start_before_end(self) -> FeaturesConfig:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


def run(platform: Platform, config: FeaturesConfig) -> None:
    trips = platform.read_table(config.trips_table, produced_by="task prepare_data of job pipeline")
    tables = [
        (config.pickup_features_table, pickup_features, PICKUP_DESCRIPTION),
        (config.dropoff_features_table, dropoff_features, DROPOFF_DESCRIPTION),
    ]
    for table, transform, description in tables:
        platform.feature_store.write_table(
            table,
            transform(trips, config.start, config.end),
            primary_keys=[FEATURE_KEY, FEATURE_TIMESTAMP],
            timestamp_key=FEATURE_TIMESTAMP,
            description=description,
        )
        rows = platform.read_table(table).count()
        log.info("feature table %s has %d rows", table, rows)


main = task_entry_point(FeaturesConfig, run)
