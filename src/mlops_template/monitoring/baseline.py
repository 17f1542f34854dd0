"""The drift baseline: a sample of the pipeline's trips with the model inputs built as for training.

Why these rows: they are what the model was trained on (the training set is this table through
the same point-in-time feature lookups), they exist on both platforms without an extra table, and
they follow the data when the pipeline retrains on newer trips. Predictions are compared with the
baseline's actual fares (the distribution a well-fitted model reproduces), so no scoring run is
needed to get baseline predictions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd
from pyspark.sql import functions as F

from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
from mlops_template.features.lookups import build_training_set

if TYPE_CHECKING:
    from mlops_template.platform import Platform

log = logging.getLogger(__name__)

SAMPLE_SEED = 17


def baseline_sample(
    platform: Platform, trips_table: str, pickup_table: str, dropoff_table: str, rows: int
) -> pd.DataFrame:
    """About `rows` trips (a seeded sample) with MODEL_INPUT_COLUMNS and the fare, as float64."""
    trips = platform.read_table(trips_table, produced_by="task prepare_data of job pipeline")
    total = trips.count()
    if total > rows:
        trips = trips.sample(fraction=rows / total, seed=SAMPLE_SEED)
    training_set = build_training_set(platform, trips, pickup_table, dropoff_table)
    frame = training_set.select(
        *[F.col(name).cast("double").alias(name) for name in [*MODEL_INPUT_COLUMNS, LABEL]]
    ).toPandas()
    log.info("baseline: %d of %d trips of %s", len(frame), total, trips_table)
    return frame
