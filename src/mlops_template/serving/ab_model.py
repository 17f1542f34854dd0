"""Sticky A/B model: champion and challenger in one pyfunc, each row assigned by a stable key hash.

Databricks routes traffic per request, so "one key always meets one variant" is a model, not a
routing feature: this pyfunc holds both models as artifacts, sends a row to the challenger when the
SHA-256 of its key column value falls below the challenger share, and returns the prediction (a
number, or a classifier's class probabilities) with the variant that answered. It is registered and
served like any model, so the assignment is the same on Databricks and locally.

A variant that looks its features up is called as its feature store wrapper calls it: after the
lookup (the endpoint does it for the A/B model, logged with the champion's lookups), without a
second schema enforcement, so a feature missing for a key reaches it as null even where the
signature says integer. A variant logged with `fe.log_model` is its `raw_model`
(`data/feature_store/raw_model`, which has no input schema), given the columns of the variant's
signature; one logged with local lookups (MLmodel metadata `feature_lookups`) is called through its
pyfunc implementation.

This file is logged as MLflow "model from code": it is copied into the model and executed on
load, so it imports nothing from this package (the serving container does not have it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.pyfunc import PyFuncModel, PythonModel, PythonModelContext

CHAMPION = "champion"
CHALLENGER = "challenger"
# Where `fe.log_model` keeps its feature spec and the model it wraps (`raw_model`), in the model's dir.
FEATURE_STORE_DATA = ("data", "feature_store")
LOOKUPS_METADATA = "feature_lookups"  # platform.feature_store.FEATURE_LOOKUPS_METADATA
_HASH_SPACE = float(2**64)

Predict = Callable[[pd.DataFrame], Any]


def key_text(key: Any) -> str | None:
    """The text a key is hashed by, the same whatever type the request's column got: a number by
    its value as a float64 (a column of integers with a null in it arrives as floats, which round
    integers above 2**53), written as an integer when it is one; anything else as its text."""
    if key is None or (isinstance(key, float | np.floating) and np.isnan(key)):
        return None
    if isinstance(key, bool | np.bool_):
        return str(bool(key))
    if isinstance(key, int | float | np.integer | np.floating):
        value = float(key)
        return str(int(value)) if value.is_integer() else repr(value)
    return str(key)


def key_bucket(key: Any) -> float:
    """A stable number in [0, 1) for a key: the first 8 bytes of SHA-256 of `key_text`; 1.0 for null."""
    text = key_text(key)
    if text is None:
        return 1.0
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPACE


def challenger_rows(keys: pd.Series, challenger_share: float) -> np.ndarray:
    """A boolean mask: True where the key is assigned to the challenger (null keys: champion)."""
    return np.fromiter((key_bucket(key) < challenger_share for key in keys), dtype=bool, count=len(keys))


class StickyABModel(PythonModel):
    """Predicts with the champion or the challenger per row, by `challenger_rows` of the key column.

    Each row's `prediction` is what its variant answers for it: a number (regression) or the list of
    class probabilities (a classifier logged with `predict_proba`), as the variant served alone would.
    Model config: `key_column`, `challenger_share`. Artifacts: `champion`, `challenger` (MLflow models).
    """

    def load_context(self, context: PythonModelContext) -> None:
        self.key_column = str(context.model_config["key_column"])
        self.challenger_share = float(context.model_config["challenger_share"])
        self.variants = {name: load_variant(Path(context.artifacts[name])) for name in (CHAMPION, CHALLENGER)}

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        to_challenger = challenger_rows(model_input[self.key_column], self.challenger_share)
        answers = {}
        for name, rows in ((CHAMPION, ~to_challenger), (CHALLENGER, to_challenger)):
            if rows.any():
                predict, columns = self.variants[name]
                output = np.asarray(predict(model_input.loc[rows, columns]), dtype="float64")
                answers[name] = (rows, output.reshape(int(rows.sum()), -1))  # one row of values per input row
        widths = {name: output.shape[1] for name, (_, output) in answers.items()}
        if len(set(widths.values())) > 1:
            raise ValueError(
                f"champion and challenger answer {widths[CHAMPION]} and {widths[CHALLENGER]} values per row: "
                "serve two versions of one model (both regressors or both classifiers of the same classes)"
            )
        prediction = np.zeros((len(model_input), max(widths.values(), default=1)), dtype="float64")
        for rows, output in answers.values():
            prediction[rows] = output
        return pd.DataFrame(
            {
                "prediction": prediction[:, 0] if prediction.shape[1] == 1 else prediction.tolist(),
                "variant": np.where(to_challenger, CHALLENGER, CHAMPION),
            }
        )


def load_variant(path: Path) -> tuple[Predict, list[str]]:
    """A variant's predict function and the input columns it takes (see the module docstring)."""
    columns = Model.load(str(path)).get_input_schema().input_names()
    raw_model = path.joinpath(*FEATURE_STORE_DATA, "raw_model")
    if raw_model.is_dir():
        return mlflow.pyfunc.load_model(str(raw_model)).predict, columns
    model = mlflow.pyfunc.load_model(str(path))
    if (model.metadata.metadata or {}).get(LOOKUPS_METADATA):
        return _implementation_predict(model), columns
    return model.predict, columns


def _implementation_predict(model: PyFuncModel) -> Predict:
    """The pyfunc implementation's predict function (the flavor's `predict_fn`), which
    `PyFuncModel.predict` calls once it enforced the signature (mlflow/pyfunc/__init__.py)."""
    return getattr(
        model._model_impl,  # MLflow's stable developer API to the implementation
        model.metadata.flavors[mlflow.pyfunc.FLAVOR_NAME].get("predict_fn", "predict"),
    )


mlflow.models.set_model(StickyABModel())
