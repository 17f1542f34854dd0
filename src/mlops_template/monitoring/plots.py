"""The monitoring figures (matplotlib object API, Agg): drift, quality and service metrics per window;
the live experiment per variant."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.metrics import window_table
from mlops_template.problem_spec import ProblemSpec

if TYPE_CHECKING:
    from mlops_template.monitoring.rollout import RolloutAnalysis

MAX_TICKS = 12
_SERVICE = ["error_rate", "latency_p95_ms"]


def _label_windows(axes: Axes, starts: pd.Index) -> None:
    """Windows as evenly spaced categories labelled by their start (one window plots as well as 48)."""
    step = max(1, int(np.ceil(len(starts) / MAX_TICKS)))
    positions = np.arange(len(starts))[::step]
    axes.set_xticks(positions, [f"{pd.Timestamp(starts[i]):%m-%d %H:%M}" for i in positions], rotation=30)
    axes.set_xlim(-0.5, len(starts) - 0.5)
    axes.set_xlabel("window start (UTC)")


def monitoring_figure(metrics: pd.DataFrame, thresholds: MonitoringThresholds, spec: ProblemSpec) -> Figure:
    """PSI per monitored input and of predictions; the task type's quality metrics with their
    limits; error rate and p95 latency, per window."""
    windows = window_table(metrics).sort_index()
    windows = windows.reindex(columns=windows.columns.union([*spec.metric_names, *_SERVICE]))
    psi = window_table(metrics, "psi").reindex(windows.index)
    x = np.arange(len(windows))
    figure = Figure(figsize=(10.0, 10.0), layout="tight")
    FigureCanvasAgg(figure)
    drift_axes, quality_axes, service_axes = figure.subplots(3, 1, sharex=True)
    for column in psi.columns:
        drift_axes.plot(x, psi[column], marker="o", markersize=4, label=column)
    drift_axes.axhline(thresholds.psi, color="red", linestyle="--", linewidth=1, label="threshold")
    drift_axes.set_ylabel("PSI vs baseline")
    drift_axes.set_title("Drift, quality and service per window")
    drift_axes.legend(fontsize="x-small", ncol=3)
    for index, name in enumerate(spec.metric_names):
        quality_axes.plot(x, windows[name], marker="o", markersize=4, color=f"C{index}", label=name)
    for index, name in enumerate(spec.metric_names):
        for bound in ("max", "min"):
            if (limit := thresholds.quality.get(f"{bound}_{name}")) is not None:
                label = f"{bound} {name}"
                quality_axes.axhline(limit, color=f"C{index}", linestyle="--", linewidth=1, label=label)
    quality_axes.set_ylabel("quality on labelled rows")
    quality_axes.legend(fontsize="small", ncol=2)
    service_axes.bar(x, 100 * windows["error_rate"], width=0.6, color="C3", alpha=0.6)
    service_axes.set_ylabel("errors (% of requests)", color="C3")
    latency_axes = service_axes.twinx()
    latency_axes.plot(x, windows["latency_p95_ms"], marker="s", markersize=4, color="C0")
    latency_axes.set_ylabel("p95 latency (ms)", color="C0")
    _label_windows(service_axes, windows.index)
    return figure


def rollout_figure(analysis: RolloutAnalysis) -> Figure:
    """Each variant's RMSE and MAE with their confidence intervals, the challenger's minus the
    champion's (below 0: the challenger errs less), and each variant's error rate and p95 latency."""
    figure = Figure(figsize=(11.0, 4.0), layout="tight")
    FigureCanvasAgg(figure)
    error_axes, difference_axes, service_axes = figure.subplots(1, 3)
    variants = list(analysis.variants.values())
    labels = [f"{v.variant}\nv{v.version} ({v.labelled} labelled)" for v in variants]
    x = np.arange(len(variants))
    for offset, metric in ((-0.1, "rmse"), (0.1, "mae")):
        intervals = [v.error.get(metric) for v in variants]
        shown = [(i, interval) for i, interval in enumerate(intervals) if interval is not None]
        if shown:
            positions = [x[i] + offset for i, _ in shown]
            estimates = np.array([interval.estimate for _, interval in shown])
            spans = np.array([[i.estimate - i.low, i.high - i.estimate] for _, i in shown]).T
            error_axes.errorbar(positions, estimates, yerr=spans, fmt="o", capsize=4, label=metric)
    error_axes.set_xticks(x, labels)
    error_axes.set_xlim(-0.5, len(variants) - 0.5)
    error_axes.set_ylabel(f"error on labelled rows ({analysis.confidence:.0%} CI)")
    error_axes.legend(fontsize="small")
    names = [metric for metric in ("rmse", "mae") if metric in analysis.difference]
    for index, metric in enumerate(names):
        interval = analysis.difference[metric]
        span = [[interval.estimate - interval.low], [interval.high - interval.estimate]]
        difference_axes.errorbar(
            [index], [interval.estimate], yerr=span, fmt="o", capsize=4, color=f"C{index}"
        )
    difference_axes.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    difference_axes.set_xticks(np.arange(len(names)), names)
    difference_axes.set_xlim(-0.5, max(len(names), 1) - 0.5)
    difference_axes.set_ylabel("challenger minus champion")
    difference_axes.set_title(
        f"v{analysis.experiment.challenger} vs v{analysis.experiment.champion}", fontsize="medium"
    )
    rates = [100 * (v.error_rate or 0.0) for v in variants]
    service_axes.bar(x, rates, width=0.5, color="C3", alpha=0.6)
    service_axes.set_ylabel("errors (% of requests)", color="C3")
    service_axes.set_xticks(x, [v.variant for v in variants])
    latency_axes = service_axes.twinx()
    latency = [np.nan if v.latency_p95_ms is None else v.latency_p95_ms for v in variants]
    latency_axes.plot(x, latency, marker="s", linestyle="none", color="C0")
    latency_axes.set_ylabel("p95 latency (ms)", color="C0")
    return figure
