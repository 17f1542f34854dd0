"""The monitoring figure: drift, quality and service metrics per window (matplotlib object API, Agg)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.metrics import window_table
from mlops_template.problem_spec import ProblemSpec

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
