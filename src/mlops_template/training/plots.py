"""Diagnostic figures of a trained model, drawn with matplotlib's Agg renderer (no display needed).

Figures are built with the object API (`matplotlib.figure.Figure` on an Agg canvas), not pyplot:
no global figure state, nothing to close, safe in a job or a server process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

MAX_POINTS = 5_000  # scatter plots sample down to this many points
CALIBRATION_BINS = 10


def _figure(width: float = 7.0, height: float = 5.0) -> Figure:
    figure = Figure(figsize=(width, height), layout="tight")
    FigureCanvasAgg(figure)
    return figure


def _sample(count: int, seed: int = 0) -> np.ndarray:
    if count <= MAX_POINTS:
        return np.arange(count)
    return np.random.default_rng(seed).choice(count, MAX_POINTS, replace=False)


def feature_importance_figure(model: Any) -> Figure | None:
    """The final estimator's `feature_importances_` by input, largest on top; None if it has none."""
    estimator = model[-1] if hasattr(model, "steps") else model
    importances = getattr(estimator, "feature_importances_", None)
    if importances is None:
        return None
    names = np.array(getattr(estimator, "feature_names_in_", [f"input {i}" for i in range(len(importances))]))
    order = np.argsort(importances)
    figure = _figure(7.0, 0.4 * len(names) + 1.5)
    axes = figure.add_subplot()
    axes.barh(names[order], np.asarray(importances)[order])
    axes.set_xlabel("importance")
    axes.set_title("Feature importance")
    return figure


def residuals_figure(actual: np.ndarray, predicted: np.ndarray, label: str) -> Figure:
    """Residual (actual - predicted) against the prediction."""
    index = _sample(len(actual))
    residuals = actual[index] - predicted[index]
    figure = _figure()
    axes = figure.add_subplot()
    axes.scatter(predicted[index], residuals, s=4, alpha=0.4)
    axes.axhline(0.0, color="black", linewidth=1)
    axes.set_xlabel(f"predicted {label}")
    axes.set_ylabel("residual")
    axes.set_title("Residuals on held-out rows")
    return figure


def predicted_vs_actual_figure(actual: np.ndarray, predicted: np.ndarray, label: str) -> Figure:
    """Predicted against actual values, with the identity line."""
    index = _sample(len(actual))
    figure = _figure(6.0, 6.0)
    axes = figure.add_subplot()
    axes.scatter(actual[index], predicted[index], s=4, alpha=0.4)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="black", linewidth=1)
    axes.set_xlabel(f"actual {label}")
    axes.set_ylabel(f"predicted {label}")
    axes.set_title("Predicted vs actual on held-out rows")
    return figure


def roc_figure(actual: np.ndarray, probability: np.ndarray) -> Figure:
    """The ROC curve of the probability of label 1, with the chance diagonal."""
    false_positive, true_positive, _ = roc_curve(actual, probability)
    figure = _figure(6.0, 6.0)
    axes = figure.add_subplot()
    axes.plot(false_positive, true_positive)
    axes.plot([0, 1], [0, 1], color="black", linewidth=1, linestyle="--")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC on held-out rows")
    return figure


def calibration_figure(actual: np.ndarray, probability: np.ndarray) -> Figure:
    """Observed share of label 1 against the mean predicted probability, per probability bin."""
    observed, predicted = calibration_curve(actual, probability, n_bins=CALIBRATION_BINS)
    figure = _figure(6.0, 6.0)
    axes = figure.add_subplot()
    axes.plot(predicted, observed, marker="o")
    axes.plot([0, 1], [0, 1], color="black", linewidth=1, linestyle="--")
    axes.set_xlabel("predicted probability")
    axes.set_ylabel("observed share of label 1")
    axes.set_title("Calibration on held-out rows")
    return figure
