"""The fare model's first step: the pickup hour and weekday from the pickup time, inside the model.

A client sends timestamps; the model derives what it learns from them, so training, batch scoring
and serving compute them with this one piece of code (a derivation done in Spark for training and
again by each client would drift apart). Imports only pandas, numpy and scikit-learn: it is shipped
inside the logged model (training.tracking) and loaded by the serving container.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

PICKUP_HOUR, PICKUP_WEEKDAY = "pickup_hour", "pickup_weekday"


def naive_utc(times: pd.Series) -> pd.Series:
    """Timestamps as naive UTC (the Spark session time zone of the jobs): aware ones converted."""
    times = pd.to_datetime(times)
    return times.dt.tz_convert("UTC").dt.tz_localize(None) if times.dt.tz is not None else times


class TripInputs(TransformerMixin, BaseEstimator):
    """Numbers for the regressor: `numeric` columns as floats, then the hour (0-23) and weekday
    (1 = Sunday .. 7, as Spark's `dayofweek`) of `pickup_time`; other columns are dropped."""

    def __init__(self, numeric: Sequence[str] = (), pickup_time: str = "") -> None:
        self.numeric = numeric
        self.pickup_time = pickup_time

    def fit(self, frame: pd.DataFrame, y: object = None) -> TripInputs:
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        pickup = naive_utc(frame[self.pickup_time])
        numbers = frame[list(self.numeric)].astype("float64")
        numbers[PICKUP_HOUR] = pickup.dt.hour.astype("float64")
        numbers[PICKUP_WEEKDAY] = ((pickup.dt.dayofweek + 1) % 7 + 1).astype("float64")
        return numbers

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.array([*self.numeric, PICKUP_HOUR, PICKUP_WEEKDAY], dtype=object)
