"""Task `rollout_metrics` of job monitoring: the running experiment's per-variant analysis.

Appends one row per variant to the rollout metrics table and logs an MLflow run (tagged `rollout`)
with the decision the rollout job would take now; it changes nothing (the rollout job decides).
Without a running experiment there is nothing to analyse.
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import Field

from mlops_template.monitoring.rollout import (
    RolloutAnalysis,
    RolloutDecision,
    RolloutParams,
    RolloutParamsParam,
    analyse,
    decide,
    save_rollout_metrics,
)
from mlops_template.monitoring.tracking import log_rollout_run
from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.registry.experiment import Experiment, running_experiment
from mlops_template.registry.versions import ModelName, RegistryError
from mlops_template.tasks.common import TaskConfig, task_entry_point

log = logging.getLogger(__name__)


class RolloutMetricsConfig(TaskConfig):
    model_name: ModelName
    monitoring_table: str
    rollout_metrics_table: str
    experiment_name: str
    bundle_target: str
    job_run_id: str
    rollout_params: RolloutParamsParam = Field(default_factory=RolloutParams)


def current_experiment(model_name: str) -> Experiment | None:
    """The running experiment of `model_name`, or None (said why) when none runs."""
    try:
        experiment = running_experiment(model_name)
    except RegistryError as error:
        log.warning("no experiment: %s", error)
        return None
    if experiment is None:
        log.info("%s has no running experiment (no challenger served beside the champion)", model_name)
    return experiment


def evaluate(
    platform: Platform, config: RolloutMetricsConfig, experiment: Experiment, now: dt.datetime
) -> tuple[RolloutAnalysis, RolloutDecision]:
    """The experiment's analysis and the decision it supports now."""
    analysis = analyse(
        platform, config.monitoring_table, experiment, load_problem().label, config.rollout_params, now
    )
    decision = decide(analysis, config.rollout_params, now)
    log.info("%s: %s: %s", experiment.model_name, decision.action, decision.reason)
    return analysis, decision


def record(
    platform: Platform,
    config: RolloutMetricsConfig,
    analysis: RolloutAnalysis,
    decision: RolloutDecision,
    applied: bool,
) -> str:
    """Append the analysis to the rollout metrics table and log it as an MLflow run; returns its id."""
    save_rollout_metrics(platform, config.rollout_metrics_table, analysis, decision, applied)
    return log_rollout_run(
        platform.experiment_id(config.experiment_name),
        analysis,
        decision,
        config.rollout_params,
        tags={
            "bundle_target": config.bundle_target,
            "job_run_id": config.job_run_id,
            "rollout_applied": str(applied).lower(),
        },
    )


def run(platform: Platform, config: RolloutMetricsConfig) -> None:
    platform.configure_mlflow()
    experiment = current_experiment(config.model_name)
    if experiment is None:
        return
    analysis, decision = evaluate(platform, config, experiment, dt.datetime.now(dt.UTC))
    record(platform, config, analysis, decision, applied=False)


main = task_entry_point(RolloutMetricsConfig, run)
