"""The retrain decision: do the latest judged windows show drift or a quality drop?

A window is judged when it has at least `min_rows` answered predictions and ends after the model's
latest version was registered: a window wholly before the newest training describes a model that
is no longer the newest, and must not trigger another retraining on every run until it ages out
(a drift that lasts keeps asking for retraining, once per new window). Retraining
is due when at least `violation_windows` of the latest `evaluation_windows` judged windows
violate a threshold: a monitored input's PSI or KS, the predictions' PSI, or a quality limit
(`max_<metric>` / `min_<metric>`) on the labelled rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.metrics import WINDOW_END, WINDOW_START, window_table
from mlops_template.monitoring.unpack import PREDICTION

log = logging.getLogger(__name__)

MAX_REASONS = 20  # task values stay small


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain, why, and which windows were judged."""

    retrain: bool
    reasons: list[str] = field(default_factory=list)
    judged_windows: list[dt.datetime] = field(default_factory=list)


def _over(value: float, limit: float) -> bool:
    return bool(pd.notna(value)) and value > limit


def _quality_violations(window: pd.Series, limits: dict[str, float]) -> list[str]:
    """Quality limits a window breaks: `max_<metric>` exceeded or `min_<metric>` undershot."""
    found = []
    for name, limit in limits.items():
        bound, _, metric = name.partition("_")
        value = window.get(metric, float("nan"))
        if _over(value, limit) if bound == "max" else _over(-value, -limit):
            found.append(f"{metric}={value:.3f} {'>' if bound == 'max' else '<'} {limit}")
    return found


def window_violations(
    window: pd.Series, psi: pd.Series, ks: pd.Series, thresholds: MonitoringThresholds
) -> list[str]:
    """What one window violates: drifted inputs and predictions, quality (with enough labels)."""
    found = [
        f"psi({name})={psi.get(name):.3f} > {thresholds.psi}"
        for name in thresholds.features
        if _over(psi.get(name, float("nan")), thresholds.psi)
    ]
    found += [
        f"ks({name})={ks.get(name):.3f} > {thresholds.ks}"
        for name in thresholds.features
        if _over(ks.get(name, float("nan")), thresholds.ks)
    ]
    if _over(psi.get(PREDICTION, float("nan")), thresholds.prediction_psi):
        found.append(f"psi(prediction)={psi[PREDICTION]:.3f} > {thresholds.prediction_psi}")
    if window.get("labeled_rows", 0) >= thresholds.min_labeled_rows:
        found += _quality_violations(window, thresholds.quality)
    return found


def decide(
    metrics: pd.DataFrame, thresholds: MonitoringThresholds, not_before: dt.datetime | None = None
) -> RetrainDecision:
    """Judge the latest windows of one granularity's `metrics` (rows of the drift-metrics table)."""
    if metrics.empty:
        return RetrainDecision(False, ["no drift metrics yet: no window to judge"])
    windows = window_table(metrics)
    judged = windows[windows["rows"] >= thresholds.min_rows]
    if not_before is not None:
        ends = metrics.groupby(WINDOW_START)[WINDOW_END].max().reindex(judged.index)
        judged = judged[ends > pd.Timestamp(not_before)]
    judged = judged.sort_index().tail(thresholds.evaluation_windows)
    if judged.empty:
        reason = f"no window with at least {thresholds.min_rows} predictions"
        if not_before is not None:
            reason += f" ending after the latest model version ({not_before:%Y-%m-%d %H:%M} UTC)"
        return RetrainDecision(False, [reason])
    psi = window_table(metrics, "psi").reindex(judged.index)
    ks = window_table(metrics, "ks").reindex(judged.index)
    reasons, violating = [], 0
    for start, window in judged.iterrows():
        found = window_violations(window, psi.loc[start], ks.loc[start], thresholds)
        violating += bool(found)
        reasons += [f"{start:%Y-%m-%d %H:%M}: {reason}" for reason in found]
    retrain = violating >= thresholds.violation_windows
    summary = (
        f"{violating} of {len(judged)} judged windows violate (retrain at {thresholds.violation_windows})"
    )
    return RetrainDecision(
        retrain, [summary, *reasons][:MAX_REASONS], [w.to_pydatetime() for w in judged.index]
    )


def latest_version_time(model_name: str) -> dt.datetime | None:
    """When the newest version of `model_name` was registered (UTC, naive), None if it has none."""
    try:
        versions = MlflowClient().search_model_versions(f"name='{model_name}'")
    except MlflowException as error:
        log.warning("cannot list versions of %s (%s): judging every window", model_name, error.message)
        return None
    if not versions:
        return None
    newest = max(version.creation_timestamp for version in versions)
    return dt.datetime.fromtimestamp(newest / 1000, dt.UTC).replace(tzinfo=None)
