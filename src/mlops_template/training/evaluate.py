"""The held-out split (a stable hash of trip_id) and the regression metrics on it.

Training and the validation gate use the same split, so a trip is held out in every run with the
same `test_size`: the champion was never trained on the rows the gate compares it on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from pyspark.sql import Column
from pyspark.sql import functions as F
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

TRIP_ID = "trip_id"
_BUCKETS = 10_000
_SALT = "holdout"  # decorrelates the split from any other use of the trip_id hash


def is_holdout(test_size: float) -> Column:
    """True for the trips held out from training: a deterministic `test_size` share by trip_id."""
    bucket = F.pmod(F.xxhash64(F.lit(_SALT), F.col(TRIP_ID)), F.lit(_BUCKETS))
    return bucket < F.lit(round(test_size * _BUCKETS))


@dataclass(frozen=True)
class RegressionMetrics:
    """Errors of fare predictions in dollars, on `rows` held-out trips."""

    rmse: float
    mae: float
    r2: float
    rows: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """The metrics keyed `prefix + name`, e.g. `test_rmse`."""
        return {f"{prefix}{name}": float(value) for name, value in asdict(self).items()}


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> RegressionMetrics:
    """RMSE, MAE and R² of `predicted` against `actual`."""
    if len(actual) == 0:
        raise ValueError("no held-out rows to evaluate on: the training set is empty or test_size too small")
    return RegressionMetrics(
        rmse=float(np.sqrt(mean_squared_error(actual, predicted))),
        mae=float(mean_absolute_error(actual, predicted)),
        r2=float(r2_score(actual, predicted)),
        rows=len(actual),
    )
