"""The held-out split (a stable hash of the row id) and the task type's metrics on it.

Training and the validation gate use the same split, so a row is held out in every run with the
same `test_size`: the champion was never trained on the rows the gate compares it on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from mlops_template.problem_spec import ProblemSpec, TaskType

_BUCKETS = 10_000
_SALT = "holdout"  # decorrelates the split from any other use of the row id's hash


def is_holdout(test_size: float, row_id: str) -> Column:
    """True for the rows held out from training: a deterministic `test_size` share by `row_id`."""
    bucket = F.pmod(F.xxhash64(F.lit(_SALT), F.col(row_id)), F.lit(_BUCKETS))
    return bucket < F.lit(round(test_size * _BUCKETS))


@dataclass(frozen=True)
class Metrics:
    """The task type's metrics of predictions on `rows` held-out rows."""

    values: Mapping[str, float]
    rows: int

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """The metrics and the row count keyed `prefix + name`, e.g. `test_rmse`, `test_rows`."""
        return {f"{prefix}{name}": float(value) for name, value in {**self.values, "rows": self.rows}.items()}

    def describe(self) -> str:
        """`rmse 1.234, mae 0.987, r2 0.950` (the metrics in their task type's order)."""
        return ", ".join(f"{name} {value:.3f}" for name, value in self.values.items())


def evaluate(
    spec: ProblemSpec, actual: np.ndarray, predicted: np.ndarray, *, allow_one_class: bool = False
) -> Metrics:
    """The task type's metrics of `predicted` (values, or probabilities of label 1) against `actual`.

    `allow_one_class`: binary labels of one class only (a monitoring window) get a NaN ROC AUC
    instead of an error."""
    if len(actual) == 0:
        raise ValueError("no held-out rows to evaluate on: the training set is empty or test_size too small")
    if spec.task_type == TaskType.REGRESSION:
        values = {
            "rmse": float(np.sqrt(mean_squared_error(actual, predicted))),
            "mae": float(mean_absolute_error(actual, predicted)),
            "r2": float(r2_score(actual, predicted)),
        }
    else:
        both_classes = len(np.unique(actual)) == 2
        if not both_classes and not allow_one_class:
            raise ValueError(
                f"the held-out rows all have {spec.label} = {actual[0]}: ROC AUC needs both classes; "
                "train on more rows or raise test_size"
            )
        values = {
            "roc_auc": float(roc_auc_score(actual, predicted)) if both_classes else float("nan"),
            "log_loss": float(log_loss(actual, predicted, labels=[0, 1])),
            "brier": float(brier_score_loss(actual, predicted)),
            "accuracy": float(accuracy_score(actual, predicted >= spec.classification_threshold)),
        }
    return Metrics(values, len(actual))


def positive_probability(output: Any) -> np.ndarray:
    """The probability of label 1 from a classifier's per-class output (columns for labels 0, 1)."""
    probabilities = np.asarray(output.to_numpy() if isinstance(output, pd.DataFrame) else output, dtype=float)
    if probabilities.ndim != 2 or probabilities.shape[1] != 2:
        raise ValueError(
            f"expected one probability per class (two columns) from a binary classifier, got shape "
            f"{probabilities.shape}: log the model with pyfunc_predict_fn='predict_proba'"
        )
    return probabilities[:, 1]


def predictions(spec: ProblemSpec, output: Any) -> np.ndarray:
    """A model's output as the values the metrics take: the prediction, or P(label 1)."""
    if spec.is_classifier:
        return positive_probability(output)
    return np.asarray(output, dtype=float).reshape(-1)
