"""Task `decide` of job rollout: end the running experiment when the live metrics allow it.

`--action=auto`: analyse the experiment, decide (promote, roll back or keep collecting), record the
analysis and the decision (rollout metrics table, MLflow run), then apply it to the registry; the
job's `deploy` task then makes the endpoint serve what the registry says. Idempotent: once applied,
no experiment runs, so a second run finds nothing to decide. `--action=rollback`: move `champion`
back to `previous_champion` (as `mlops model rollback`), for the `deploy` task to serve it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

from mlops_template.platform import Platform
from mlops_template.registry.experiment import conclude_promote, conclude_rollback
from mlops_template.registry.versions import rollback
from mlops_template.tasks.common import task_entry_point
from mlops_template.tasks.rollout_metrics import RolloutMetricsConfig, current_experiment, evaluate, record

log = logging.getLogger(__name__)


class RolloutDecideConfig(RolloutMetricsConfig):
    action: Literal["auto", "rollback"] = "auto"


def run(platform: Platform, config: RolloutDecideConfig) -> None:
    platform.configure_mlflow()
    if config.action == "rollback":
        done = rollback(config.model_name)
        log.info(
            "%s: champion rolled back from version %d to %d", done.model_name, done.rolled_back, done.champion
        )
        return
    experiment = current_experiment(config.model_name)
    if experiment is None:
        log.info("nothing to decide")
        return
    analysis, decision = evaluate(platform, config, experiment, dt.datetime.now(dt.UTC))
    run_id = record(platform, config, analysis, decision, applied=decision.action != "continue")
    reason = f"{decision.reason} (MLflow run {run_id})"
    if decision.action == "promote":
        conclude_promote(experiment, reason)
    elif decision.action == "rollback":
        conclude_rollback(experiment, reason)


main = task_entry_point(RolloutDecideConfig, run)
