"""The text report of `mlops monitor report`: the latest windows and the retrain verdict."""

from __future__ import annotations

import math

import pandas as pd

from mlops_template.monitoring.check import decide
from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.metrics import window_table
from mlops_template.monitoring.unpack import PREDICTION
from mlops_template.problem_spec import ProblemSpec

_WIDTH = 8  # of each quality metric's column


def _number(value: float, pattern: str = "{:.0f}") -> str:
    return "-" if value is None or math.isnan(value) else pattern.format(value)


def _header(metrics: tuple[str, ...]) -> str:
    quality = " ".join(f"{name:>{_WIDTH}}" for name in metrics)
    return (
        f"{'window (UTC)':<17} {'requests':>8} {'errors':>7} {'p50/p95/p99 ms':>15} {'predictions':>11} "
        f"{'labeled':>7} {quality} {'pred PSI':>8}  drifted inputs (PSI, KS)"
    )


def _drifted(psi: pd.Series, ks: pd.Series, thresholds: MonitoringThresholds) -> str:
    names = [
        name
        for name in thresholds.features
        if psi.get(name, 0) > thresholds.psi or ks.get(name, 0) > thresholds.ks
    ]
    return ", ".join(f"{name} ({psi.get(name):.2f}, {ks.get(name):.2f})" for name in names) or "-"


def _line(
    start: pd.Timestamp,
    window: pd.Series,
    psi: pd.Series,
    ks: pd.Series,
    t: MonitoringThresholds,
    metrics: tuple[str, ...],
) -> str:
    def value(name: str, pattern: str = "{:.0f}", scale: float = 1.0) -> str:
        return _number(scale * window.get(name, math.nan), pattern)

    latency = "/".join(value(f"latency_p{q}_ms") for q in (50, 95, 99))
    quality = " ".join(f"{value(name, '{:.3f}'):>{_WIDTH}}" for name in metrics)
    prediction_psi = _number(psi.get(PREDICTION, math.nan), "{:.2f}")
    return (
        f"{start:%Y-%m-%d %H:%M} {value('requests'):>8} {value('error_rate', '{:.1f}%', 100):>7} "
        f"{latency:>15} {value('rows'):>11} {value('labeled_rows'):>7} {quality} "
        f"{prediction_psi:>8}  {_drifted(psi, ks, t)}"
    )


def format_report(
    metrics: pd.DataFrame,
    thresholds: MonitoringThresholds,
    spec: ProblemSpec,
    *,
    table: str,
    granularity: str,
    windows: int = 5,
) -> str:
    """The latest `windows` windows of `metrics` (one granularity) and what the thresholds decide,
    with the quality metrics of `spec`'s task type.

    The verdict ignores the model registry: the job's check also skips windows that ended before
    the newest model version was registered.
    """
    if metrics.empty:
        return f"No {granularity} windows in {table} yet: run the monitoring job after sending traffic."
    table_rows = window_table(metrics).sort_index().tail(windows)
    psi = window_table(metrics, "psi").reindex(table_rows.index)
    ks = window_table(metrics, "ks").reindex(table_rows.index)
    lines = [
        f"Monitoring metrics of {table}: latest {len(table_rows)} windows of {granularity}",
        "",
        _header(spec.metric_names),
    ]
    lines += [
        _line(start, row, psi.loc[start], ks.loc[start], thresholds, spec.metric_names)
        for start, row in table_rows.iterrows()
    ]
    decision = decide(metrics, thresholds)
    lines += [
        "",
        f"Retrain by these thresholds: {'yes' if decision.retrain else 'no'}",
        *[f"  - {r}" for r in decision.reasons],
    ]
    return "\n".join(lines)
