"""Sticky A/B model: champion and challenger in one pyfunc, each row assigned by a stable key hash.

Databricks routes traffic per request, so "one key always meets one variant" is a model, not a
routing feature: this pyfunc holds both models as artifacts, sends a row to the challenger when the
SHA-256 of its key column value falls below the challenger share, and returns the prediction with
the variant that answered. It is registered and served like any model, so the assignment is the
same on Databricks and locally.

This file is logged as MLflow "model from code": it is copied into the model and executed on
load, so it imports nothing from this package (the serving container does not have it).
"""

from __future__ import annotations

import hashlib
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

CHAMPION = "champion"
CHALLENGER = "challenger"
_HASH_SPACE = float(2**64)


def key_bucket(key: Any) -> float:
    """A stable number in [0, 1) for a key: the first 8 bytes of SHA-256 of its text; 1.0 for null."""
    if key is None or (isinstance(key, float) and np.isnan(key)):
        return 1.0
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPACE


def challenger_rows(keys: pd.Series, challenger_share: float) -> np.ndarray:
    """A boolean mask: True where the key is assigned to the challenger (null keys: champion)."""
    return np.fromiter((key_bucket(key) < challenger_share for key in keys), dtype=bool, count=len(keys))


class StickyABModel(PythonModel):
    """Predicts with the champion or the challenger per row, by `challenger_rows` of the key column.

    Model config: `key_column`, `challenger_share`. Artifacts: `champion`, `challenger` (MLflow models).
    """

    def load_context(self, context: PythonModelContext) -> None:
        self.key_column = str(context.model_config["key_column"])
        self.challenger_share = float(context.model_config["challenger_share"])
        self.variants = {}
        for name in (CHAMPION, CHALLENGER):
            model = mlflow.pyfunc.load_model(context.artifacts[name])
            self.variants[name] = (model, model.metadata.get_input_schema().input_names())

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        to_challenger = challenger_rows(model_input[self.key_column], self.challenger_share)
        prediction = np.zeros(len(model_input), dtype="float64")
        for name, rows in ((CHAMPION, ~to_challenger), (CHALLENGER, to_challenger)):
            if rows.any():
                model, columns = self.variants[name]
                prediction[rows] = np.asarray(
                    model.predict(model_input.loc[rows, columns]), dtype="float64"
                ).ravel()
        return pd.DataFrame(
            {"prediction": prediction, "variant": np.where(to_challenger, CHALLENGER, CHAMPION)}
        )


mlflow.models.set_model(StickyABModel())
