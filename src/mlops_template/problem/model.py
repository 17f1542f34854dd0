"""The fare model: a scikit-learn Pipeline ending in a LightGBM regressor, and its hyper-parameters.

The model's input contract is MODEL_INPUT_COLUMNS: what a client sends (distance, zips, pickup and
drop-off times) and the looked-up features, doubles where null (NaN) is allowed: LightGBM routes
missing values down a learned side of each split, so a trip whose zip had no recent trips (no
feature row as of its time) still gets a prediction. The pipeline's first step derives the pickup
hour and weekday from the pickup time (trip_time.TripInputs); the drop-off time is a lookup key
only.

Zips are numeric, not categorical: the per-zip effect the model needs is mostly carried by the
pickup feature table (mean fare per zip as of the trip, a leak-free target encoding); zip codes
are geographically ordered (100xx Manhattan, 104xx Bronx, 112xx Brooklyn, 11371 / 11430 the
airports), so range splits are meaningful; and an unseen zip at serving time is just a number,
with no category list frozen into the model that a new zip would fall outside of.
"""

from __future__ import annotations

from lightgbm import LGBMRegressor
from pydantic import BaseModel, ConfigDict, Field
from sklearn.pipeline import Pipeline

from mlops_template.problem.features import DROPOFF_FEATURES, PICKUP_FEATURES, PICKUP_TIME
from mlops_template.problem.trip_time import TripInputs

# The types skops must trust beyond scikit-learn's to load the fitted pipeline: what a fitted
# LGBMRegressor adds and the pipeline's own first step (found with `skops.io.get_untrusted_types`).
TRUSTED_TYPES = (
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMRegressor",
    f"{TripInputs.__module__}.TripInputs",
)
# The numeric inputs the regressor takes as they are (the zips as numbers: see above).
NUMERIC_INPUTS = ("trip_distance", "pickup_zip", "dropoff_zip", *PICKUP_FEATURES, *DROPOFF_FEATURES)


class LightGBMParams(BaseModel):
    """LightGBM hyper-parameters (names as in lightgbm.LGBMRegressor); a job overrides any of them.

    On 20k generated trips these defaults score a held-out RMSE of about 1.9 dollars and R2 0.96,
    a one-split model 9.4 and 0.06.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_estimators: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=31, ge=2)
    max_depth: int = Field(default=-1, ge=-1, description="-1: no limit")
    min_child_samples: int = Field(default=20, ge=1)
    subsample: float = Field(default=0.8, gt=0, le=1)
    # LightGBM ignores `subsample` unless bagging runs every `subsample_freq` iterations.
    subsample_freq: int = Field(default=1, ge=0)
    colsample_bytree: float = Field(default=0.9, gt=0, le=1)
    random_state: int = 42


def build_pipeline(params: LightGBMParams) -> Pipeline:
    """The numeric inputs and the pickup hour and weekday (a pandas frame, so LightGBM knows the
    feature names), then LightGBM.

    Feature importances are total split gains (`importance_type="gain"`), as the training plots show.
    """
    inputs = TripInputs(numeric=NUMERIC_INPUTS, pickup_time=PICKUP_TIME)
    model = LGBMRegressor(**params.model_dump(), importance_type="gain", verbose=-1)
    return Pipeline([("inputs", inputs), ("model", model)])
