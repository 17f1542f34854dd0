"""Task `batch_score`: score trips with the champion through spark_udf into a predictions table.

Before any version has passed the validation gate there is no champion: the task says so and
succeeds without scoring (the first run of a pipeline whose challenger was rejected).
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import functions as F

from mlops_template.features.lookups import build_feature_set
from mlops_template.platform import Platform
from mlops_template.scoring.batch import PREDICTION_KEYS, NoModelVersionError, resolve_alias, score
from mlops_template.tasks.common import OptionalTimestamp, TaskConfig, task_entry_point

log = logging.getLogger(__name__)


class BatchScoreConfig(TaskConfig):
    model_name: str
    alias: str = "champion"
    trips_table: str
    pickup_features_table: str
    dropoff_features_table: str
    predictions_table: str
    start: OptionalTimestamp = None
    end: OptionalTimestamp = None


def run(platform: Platform, config: BatchScoreConfig) -> None:
    platform.configure_mlflow()
    try:
        model = resolve_alias(config.model_name, config.alias)
    except NoModelVersionError as error:
        log.warning("nothing scored: %s (no version has passed the validation gate yet)", error)
        return
    trips = platform.read_table(config.trips_table, produced_by="task prepare_data of job pipeline")
    if config.start is not None:
        trips = trips.where(F.col("tpep_pickup_datetime") >= F.lit(config.start))
    if config.end is not None:
        trips = trips.where(F.col("tpep_pickup_datetime") < F.lit(config.end))
    rows = build_feature_set(platform, trips, config.pickup_features_table, config.dropoff_features_table)
    predictions = score(rows, model, dt.datetime.now(dt.UTC).replace(tzinfo=None))
    platform.merge_table(predictions, config.predictions_table, keys=PREDICTION_KEYS)
    scored = platform.read_table(config.predictions_table).where(F.col("model_version") == model.version)
    count = scored.count()
    log.info(
        "%s now holds %d predictions of %s version %d",
        config.predictions_table,
        count,
        model.name,
        model.version,
    )


main = task_entry_point(BatchScoreConfig, run)
