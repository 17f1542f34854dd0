"""Held-out trips for simulated traffic: new trips with the model's inputs built as for scoring.

The trips come from the sample generator with another seed than the pipeline's source, over the
same period, cleaned like `prepare_data`. Their pickup and dropoff features are computed from
these trips with the pipeline's own transforms and looked up as of each trip with the training
lookups' keys and lookback windows, so clean traffic follows the training distribution: the
population must have as many trips as the pipeline's source for the per-zip counts to compare.
Everything here is plain Spark over DataFrames: no table, no metastore.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mlops_template.data.generator import generate_trips
from mlops_template.features.columns import FEATURE_KEY, FEATURE_TIMESTAMP, LABEL, MODEL_INPUT_COLUMNS
from mlops_template.features.lookups import feature_lookups
from mlops_template.features.transforms import dropoff_features, pickup_features
from mlops_template.features.trips import add_trip_inputs
from mlops_template.platform.local_feature_store import as_of_join
from mlops_template.tasks.prepare_data import PrepareDataConfig, clean_trips
from mlops_template.training.evaluate import TRIP_ID

HELDOUT_SEED = 7  # the pipeline's source is generated with seed 42
HELDOUT_COLUMNS = [TRIP_ID, *MODEL_INPUT_COLUMNS, LABEL]


def held_out_trips(spark: SparkSession, rows: int, seed: int = HELDOUT_SEED) -> DataFrame:
    """`rows` generated trips, cleaned, with trip_id, MODEL_INPUT_COLUMNS (double) and the fare."""
    min_distance = PrepareDataConfig.model_fields["min_trip_distance"].default
    trips = add_trip_inputs(clean_trips(generate_trips(spark, rows=rows, seed=seed), min_distance))
    tables = (pickup_features(trips), dropoff_features(trips))
    for lookup, features in zip(feature_lookups("", ""), tables, strict=True):
        (key,) = lookup.lookup_key
        trips = as_of_join(
            trips,
            features,
            [(key, FEATURE_KEY)],
            (lookup.timestamp_lookup_key, FEATURE_TIMESTAMP),
            {name: name for name in lookup.feature_names},
            lookup.lookback_window.total_seconds(),
        )
    return trips.select(
        TRIP_ID, *[F.col(name).cast("double").alias(name) for name in MODEL_INPUT_COLUMNS], LABEL
    )


def drifted(trips: pd.DataFrame) -> pd.DataFrame:
    """The same trips as a changed city would send them: twice as long, all in the evening."""
    shifted = trips.copy()
    shifted["trip_distance"] = 2 * shifted["trip_distance"]
    shifted["pickup_hour"] = 16 + shifted["pickup_hour"] % 8
    return shifted
