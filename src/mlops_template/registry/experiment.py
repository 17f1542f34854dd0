"""A live experiment: a challenger served beside the champion until the rollout job decides.

The validation gate has three outcomes (`gate_outcome` tag): `promoted`, `rejected` and
`experiment` (passes the thresholds but is not clearly better offline). Under the rollout
policies `canary` and `ab_test` an `experiment` challenger keeps its `challenger` alias and is
deployed beside the champion; under `replace` the gate promotes it as before. The rollout job
ends the experiment: *promote* moves `champion` to it, *roll back* removes its `challenger`
alias; either way the version records the outcome and why (`rollout_outcome`, `rollout_reason`),
so a second run of the same decision finds no running experiment and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from mlflow import MlflowClient

from mlops_template.registry.versions import (
    CHALLENGER,
    CHAMPION,
    GATE_OUTCOME_TAG,
    ROLLOUT_OUTCOME_TAG,
    ROLLOUT_REASON_TAG,
    get_aliases,
    get_version,
    promote,
    set_version_tags,
)

log = logging.getLogger(__name__)

RolloutPolicy = Literal["replace", "canary", "ab_test"]
EXPERIMENT = "experiment"  # the gate outcome of a challenger to try live
EXPERIMENT_STARTED_TAG = "experiment_started_at"  # set when the endpoint first serves it
ROLLOUT_PROMOTED = "promoted"
ROLLOUT_ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class Experiment:
    """The champion and the challenger tried live beside it."""

    model_name: str
    champion: int
    challenger: int
    started_at: dt.datetime | None  # None until the endpoint serves the challenger


def running_experiment(model_name: str) -> Experiment | None:
    """The running experiment: a `challenger` distinct from the `champion`, with gate outcome
    `experiment` and no rollout outcome yet; None otherwise (or when there is no champion)."""
    aliases = get_aliases(model_name)
    champion, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    if champion is None or challenger is None or champion == challenger:
        return None
    tags = get_version(model_name, challenger).tags
    if tags.get(GATE_OUTCOME_TAG) != EXPERIMENT or ROLLOUT_OUTCOME_TAG in tags:
        return None
    started = tags.get(EXPERIMENT_STARTED_TAG)
    return Experiment(
        model_name=model_name,
        champion=champion,
        challenger=challenger,
        started_at=dt.datetime.fromisoformat(started) if started else None,
    )


def mark_started(experiment: Experiment, when: dt.datetime | None = None) -> Experiment:
    """Record when the endpoint began serving the challenger (only the first time)."""
    if experiment.started_at is not None:
        return experiment
    started = (when or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    set_version_tags(
        experiment.model_name, experiment.challenger, {EXPERIMENT_STARTED_TAG: started.isoformat()}
    )
    log.info(
        "%s: experiment with version %d started at %s", experiment.model_name, experiment.challenger, started
    )
    return Experiment(experiment.model_name, experiment.champion, experiment.challenger, started)


class ExperimentChangedError(RuntimeError):
    """The aliases moved since the experiment was judged (e.g. a new training took `challenger`)."""


def conclude_promote(experiment: Experiment, reason: str) -> None:
    """The challenger won: it becomes the champion (the old one `previous_champion`)."""
    _check_unchanged(experiment)
    promote(experiment.model_name, experiment.challenger)
    _record_outcome(experiment, ROLLOUT_PROMOTED, reason)


def conclude_rollback(experiment: Experiment, reason: str) -> None:
    """The challenger lost: it loses its `challenger` alias, so no deploy serves it again."""
    _check_unchanged(experiment)
    MlflowClient().delete_registered_model_alias(experiment.model_name, CHALLENGER)
    _record_outcome(experiment, ROLLOUT_ROLLED_BACK, reason)
    log.info("%s: version %d rolled back: %s", experiment.model_name, experiment.challenger, reason)


def _check_unchanged(experiment: Experiment) -> None:
    """Refuse to act on an experiment whose champion or challenger moved since it was read: the
    decision concerned other versions (a training meanwhile starts a new experiment)."""
    aliases = get_aliases(experiment.model_name)
    now = (aliases.get(CHAMPION), aliases.get(CHALLENGER))
    if now != (experiment.champion, experiment.challenger):
        raise ExperimentChangedError(
            f"{experiment.model_name}: the experiment judged champion {experiment.champion} against "
            f"challenger {experiment.challenger}, but the aliases now say champion {now[0]}, challenger "
            f"{now[1]}: nothing changed; the next rollout run judges the experiment running then"
        )


def _record_outcome(experiment: Experiment, outcome: str, reason: str) -> None:
    """Applied first, recorded after: once the aliases moved no experiment runs, so a repeat is a no-op."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    set_version_tags(
        experiment.model_name,
        experiment.challenger,
        {ROLLOUT_OUTCOME_TAG: outcome, ROLLOUT_REASON_TAG: reason, "rollout_decided_at": now},
    )
