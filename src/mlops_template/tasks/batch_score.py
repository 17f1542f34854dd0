"""Task `batch_score`: score the prepared rows with the champion through spark_udf into a predictions table.

A champion logged with its feature lookups looks its features up as of each row itself
(`fe.score_batch` on Databricks, the same point-in-time join locally); any other champion scores
the rows joined with their point-in-time features.

Before any version has passed the validation gate there is no champion: the task says so and
succeeds without scoring (the first run of a pipeline whose challenger was rejected).
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import functions as F

from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.scoring.batch import NoModelVersionError, resolve_alias, score
from mlops_template.tasks.common import OptionalTimestamp, PipelineTaskConfig, task_entry_point
from mlops_template.tasks.features import PREPARED_PRODUCER
from mlops_template.training.dataset import build_feature_set

log = logging.getLogger(__name__)


class BatchScoreConfig(PipelineTaskConfig):
    model_name: str
    alias: str = "champion"
    # Rows whose event timestamp is in [start, end) are scored; empty = unbounded.
    start: OptionalTimestamp = None
    end: OptionalTimestamp = None


def run(platform: Platform, config: BatchScoreConfig) -> None:
    spec = load_problem()
    platform.configure_mlflow()
    try:
        model = resolve_alias(config.model_name, config.alias)
    except NoModelVersionError as error:
        log.warning("nothing scored: %s (no version has passed the validation gate yet)", error)
        return
    rows = platform.read_table(spec.prepared_table_name(config.schema_), produced_by=PREPARED_PRODUCER)
    if config.start is not None:
        rows = rows.where(F.col(spec.event_timestamp) >= F.lit(config.start))
    if config.end is not None:
        rows = rows.where(F.col(spec.event_timestamp) < F.lit(config.end))
    scored_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    store = platform.feature_store
    if store.logged_with_lookups(model.uri):
        predictions = score(rows, model, scored_at, spec, feature_store=store)
    else:
        predictions = score(build_feature_set(platform, spec, rows, config.schema_), model, scored_at, spec)
    table = spec.predictions_table_name(config.schema_)
    platform.merge_table(predictions, table, keys=[spec.row_id])
    count = platform.read_table(table).where(F.col("model_version") == model.version).count()
    log.info("%s now holds %d predictions of %s version %d", table, count, model.name, model.version)


main = task_entry_point(BatchScoreConfig, run)
