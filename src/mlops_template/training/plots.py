"""Diagnostic figures of a trained model, drawn with matplotlib's Agg renderer (no display needed).

Figures are built with the object API (`matplotlib.figure.Figure` on an Agg canvas), not pyplot:
no global figure state, nothing to close, safe in a job or a server process.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.pipeline import Pipeline

MAX_POINTS = 5_000  # scatter plots sample down to this many points


def _figure(width: float = 7.0, height: float = 5.0) -> Figure:
    figure = Figure(figsize=(width, height), layout="tight")
    FigureCanvasAgg(figure)
    return figure


def _sample(count: int, seed: int = 0) -> np.ndarray:
    if count <= MAX_POINTS:
        return np.arange(count)
    return np.random.default_rng(seed).choice(count, MAX_POINTS, replace=False)


def feature_importance_figure(pipeline: Pipeline) -> Figure:
    """Total gain of each input's splits, largest on top."""
    booster = pipeline[-1].booster_
    names = np.array(booster.feature_name())
    gains = booster.feature_importance(importance_type="gain")
    order = np.argsort(gains)
    figure = _figure(7.0, 0.4 * len(names) + 1.5)
    axes = figure.add_subplot()
    axes.barh(names[order], gains[order])
    axes.set_xlabel("total gain")
    axes.set_title("Feature importance")
    return figure


def residuals_figure(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """Residual (actual - predicted) against the prediction."""
    index = _sample(len(actual))
    residuals = actual[index] - predicted[index]
    figure = _figure()
    axes = figure.add_subplot()
    axes.scatter(predicted[index], residuals, s=4, alpha=0.4)
    axes.axhline(0.0, color="black", linewidth=1)
    axes.set_xlabel("predicted fare ($)")
    axes.set_ylabel("residual ($)")
    axes.set_title("Residuals on held-out trips")
    return figure


def predicted_vs_actual_figure(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """Predicted against actual fare, with the identity line."""
    index = _sample(len(actual))
    figure = _figure(6.0, 6.0)
    axes = figure.add_subplot()
    axes.scatter(actual[index], predicted[index], s=4, alpha=0.4)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="black", linewidth=1)
    axes.set_xlabel("actual fare ($)")
    axes.set_ylabel("predicted fare ($)")
    axes.set_title("Predicted vs actual on held-out trips")
    return figure
