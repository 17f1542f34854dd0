"""Log monitoring runs to MLflow, in the training experiment: the windows' drift and quality (tagged
`monitoring`) and the live experiment's per-variant analysis with its decision (tagged `rollout`)."""

from __future__ import annotations

import logging
import time

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.metrics import COLUMN, METRIC, VALUE, WINDOW_LEVEL, WINDOW_START
from mlops_template.monitoring.plots import monitoring_figure, rollout_figure
from mlops_template.monitoring.rollout import (
    RolloutAnalysis,
    RolloutDecision,
    RolloutParams,
    variant_values,
)
from mlops_template.problem_spec import ProblemSpec

log = logging.getLogger(__name__)

MONITORING_TAG = "monitoring"
FIGURE_PATH = "monitoring/drift.png"
ROLLOUT_TAG = "rollout"
ROLLOUT_FIGURE_PATH = "rollout/variants.png"


def _metric_key(metric: str, column: str) -> str:
    return metric if column == WINDOW_LEVEL else f"{metric}_{column}"


def window_series(metrics: pd.DataFrame) -> list[Metric]:
    """Each window's metrics as MLflow metrics: step = window index, timestamp = window start."""
    starts = sorted(metrics[WINDOW_START].unique())
    steps = {start: step for step, start in enumerate(starts)}
    return [
        Metric(
            key=_metric_key(row[METRIC], row[COLUMN]),
            value=float(row[VALUE]),
            timestamp=int(pd.Timestamp(row[WINDOW_START]).timestamp() * 1000),
            step=steps[row[WINDOW_START]],
        )
        for row in metrics.to_dict("records")
        if pd.notna(row[VALUE])
    ]


def log_monitoring_run(
    experiment_id: str,
    metrics: pd.DataFrame,
    thresholds: MonitoringThresholds,
    spec: ProblemSpec,
    params: dict[str, object],
    tags: dict[str, str],
) -> str:
    """A run with the windows' metrics over time, the thresholds and the figure; returns its id."""
    run_name = f"monitoring {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}"
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags={MONITORING_TAG: "true", **tags}
    ) as run:
        mlflow.log_params(params)
        mlflow.log_dict(thresholds.model_dump(), "monitoring/thresholds.json")
        MlflowClient().log_batch(run.info.run_id, metrics=window_series(metrics))
        mlflow.log_figure(monitoring_figure(metrics, thresholds, spec), FIGURE_PATH)
    log.info("logged monitoring run %s", run.info.run_id)
    return run.info.run_id


def rollout_metrics(analysis: RolloutAnalysis) -> dict[str, float]:
    """The analysis as MLflow metrics `<variant>_<name>`, e.g. `challenger_rmse_difference_high`."""
    return {
        f"{variant}_{name}": float(value)
        for variant, numbers in variant_values(analysis).items()
        for name, value in numbers.items()
        if value is not None and name != "version"
    }


def log_rollout_run(
    experiment_id: str,
    analysis: RolloutAnalysis,
    decision: RolloutDecision,
    params: RolloutParams,
    tags: dict[str, str],
) -> str:
    """A run with each variant's metrics, the rollout parameters, the decision and why, and the
    figure of the per-variant error with its confidence intervals; returns its id."""
    experiment = analysis.experiment
    versions = f"v{experiment.challenger} vs v{experiment.champion}"
    run_name = f"rollout {versions} {analysis.computed_at:%Y-%m-%d %H:%M}"
    run_tags = {
        ROLLOUT_TAG: "true",
        "model_name": experiment.model_name,
        "rollout_decision": decision.action,
        "rollout_reason": decision.reason,
        **tags,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        mlflow.log_params(
            {
                **params.model_dump(),
                "champion_version": experiment.champion,
                "challenger_version": experiment.challenger,
                "experiment_started_at": experiment.started_at,
            }
        )
        mlflow.log_metrics(rollout_metrics(analysis))
        mlflow.log_text(f"{decision.action}: {decision.reason}\n", "rollout/decision.txt")
        mlflow.log_figure(rollout_figure(analysis), ROLLOUT_FIGURE_PATH)
    log.info("logged rollout run %s: %s (%s)", run.info.run_id, decision.action, decision.reason)
    return run.info.run_id
