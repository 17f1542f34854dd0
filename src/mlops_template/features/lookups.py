"""The point-in-time feature lookups of the fare model and the training set they build.

Lookback windows: one window length of each feature table (1 hour for pickup, 30 minutes for
dropoff). A trip's lookup time sits on the tables' time grid, so the row at exactly that time
describes the window just before the trip; it is missing only when that window had no trips.
An older row then still overlaps or borders that window within one window length, but beyond it
the row describes an unrelated earlier period, and a stale count or mean is worse than a null
the model can treat as "no recent trips".
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from databricks.feature_engineering import FeatureLookup

from mlops_template.features.columns import (
    DROPOFF_FEATURES,
    DROPOFF_LOOKUP_TIME,
    LABEL,
    PICKUP_FEATURES,
    PICKUP_LOOKUP_TIME,
)
from mlops_template.features.transforms import DROPOFF_WINDOW, PICKUP_WINDOW
from mlops_template.features.trips import add_trip_inputs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform

PICKUP_LOOKBACK: dt.timedelta = PICKUP_WINDOW
DROPOFF_LOOKBACK: dt.timedelta = DROPOFF_WINDOW


def feature_lookups(pickup_table: str, dropoff_table: str) -> list[FeatureLookup]:
    """Pickup features by pickup zip and dropoff features by dropoff zip, as of each trip."""
    return [
        FeatureLookup(
            table_name=pickup_table,
            lookup_key=["pickup_zip"],
            timestamp_lookup_key=PICKUP_LOOKUP_TIME,
            feature_names=PICKUP_FEATURES,
            lookback_window=PICKUP_LOOKBACK,
        ),
        FeatureLookup(
            table_name=dropoff_table,
            lookup_key=["dropoff_zip"],
            timestamp_lookup_key=DROPOFF_LOOKUP_TIME,
            feature_names=DROPOFF_FEATURES,
            lookback_window=DROPOFF_LOOKBACK,
        ),
    ]


def _with_features(
    platform: Platform, trips: DataFrame, pickup_table: str, dropoff_table: str, label: str | None
) -> DataFrame:
    training_set = platform.feature_store.create_training_set(
        add_trip_inputs(trips),
        feature_lookups(pickup_table, dropoff_table),
        label=label,
        exclude_columns=[PICKUP_LOOKUP_TIME, DROPOFF_LOOKUP_TIME],
    )
    return training_set.load_df()


def build_training_set(
    platform: Platform, trips: DataFrame, pickup_table: str, dropoff_table: str
) -> DataFrame:
    """Trips with their inputs, point-in-time features and the label (last); lookup times dropped."""
    return _with_features(platform, trips, pickup_table, dropoff_table, label=LABEL)


def build_feature_set(
    platform: Platform, trips: DataFrame, pickup_table: str, dropoff_table: str
) -> DataFrame:
    """The same rows for scoring: no label needed, input columns keep their order."""
    return _with_features(platform, trips, pickup_table, dropoff_table, label=None)
