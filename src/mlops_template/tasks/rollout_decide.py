"""Task `decide` of job rollout: end the running experiment when the live metrics allow it.

`--action=auto`: analyse the experiment, decide (promote, roll back or keep collecting), record the
analysis and the decision (rollout metrics table, MLflow run), then apply it to the registry; the
job's `deploy` task then makes the endpoint serve what the registry says. Idempotent: once applied,
no experiment runs, so a second run finds nothing to decide. `--action=rollback`: move `champion`
back to `previous_champion` (as `mlops model rollback`), ending a running experiment first, for the
`deploy` task to serve it. A decision is applied only if the aliases have not moved since the
experiment was read (a training meanwhile started another: the task says so and changes nothing).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

from mlops_template.platform import Platform
from mlops_template.registry.experiment import ExperimentChangedError, conclude_promote, conclude_rollback
from mlops_template.registry.versions import rollback
from mlops_template.tasks.common import task_entry_point
from mlops_template.tasks.rollout_metrics import RolloutMetricsConfig, current_experiment, evaluate, record

log = logging.getLogger(__name__)


class RolloutDecideConfig(RolloutMetricsConfig):
    action: Literal["auto", "rollback"] = "auto"


def run(platform: Platform, config: RolloutDecideConfig) -> None:
    platform.configure_mlflow()
    if config.action == "rollback":
        roll_back_champion(config.model_name)
        return
    experiment = current_experiment(config.model_name)
    if experiment is None:
        log.info("nothing to decide")
        return
    analysis, decision = evaluate(platform, config, experiment, dt.datetime.now(dt.UTC))
    run_id = record(platform, config, analysis, decision, applied=decision.action != "continue")
    reason = f"{decision.reason} (MLflow run {run_id})"
    conclude = {"promote": conclude_promote, "rollback": conclude_rollback}.get(decision.action)
    if conclude is None:
        return
    try:
        conclude(experiment, reason)
    except ExperimentChangedError as error:
        log.warning("%s", error)


def roll_back_champion(model_name: str) -> None:
    """`champion` back to `previous_champion`; a running experiment ends first (rolled back), since
    it compared its challenger with the champion that is going away."""
    experiment = current_experiment(model_name)
    if experiment is not None:
        conclude_rollback(experiment, f"the champion, version {experiment.champion}, was rolled back by hand")
    rollback(model_name)


main = task_entry_point(RolloutDecideConfig, run)
