"""Model versions and their aliases: registration, promotion, rollback and status."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Annotated

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import AfterValidator

from mlops_template.platform.names import TableNameError, split_name
from mlops_template.problem_spec import ProblemSpec, load_problem
from mlops_template.training.tracking import METRIC_PREFIX, TrainingRun

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"
ROLLED_BACK = "rolled_back"
# The validation gate records its decision on the version as tag `gate_outcome`.
GATE_OUTCOME_TAG = "gate_outcome"
# The rollout job records how a live experiment ended (registry/experiment.py).
ROLLOUT_OUTCOME_TAG = "rollout_outcome"
ROLLOUT_REASON_TAG = "rollout_reason"
PROMOTED = "promoted"
REJECTED = "rejected"

_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


class RegistryError(LookupError):
    """A registered model, version or alias an operation needs does not exist."""


class RollbackError(RegistryError):
    """There is no earlier champion to roll back to."""


def check_model_name(name: str) -> str:
    """`name` if it is a three-level `catalog.schema.model` name, else a clear error."""
    try:
        split_name(name)
    except TableNameError:
        raise ValueError(
            f"'{name}' is not a three-level Unity Catalog model name: expected catalog.schema.model "
            "with letters, digits and underscores in each part"
        ) from None
    return name


ModelName = Annotated[str, AfterValidator(check_model_name)]


def is_not_found(error: MlflowException) -> bool:
    """Whether the registry said the model, version or alias does not exist."""
    return error.error_code in _NOT_FOUND


def get_version(model_name: str, version: int) -> ModelVersion:
    """The model version, or a RegistryError saying it does not exist."""
    try:
        return MlflowClient().get_model_version(model_name, str(version))
    except MlflowException as error:
        if is_not_found(error):
            raise RegistryError(
                f"version {version} of model {model_name} does not exist in the registry "
                f"({mlflow.get_registry_uri()}); run the training task first"
            ) from None
        raise


def get_aliases(model_name: str) -> dict[str, int]:
    """Alias -> version of a registered model, or a RegistryError if it is not registered."""
    try:
        model = MlflowClient().get_registered_model(model_name)
    except MlflowException as error:
        if is_not_found(error):
            raise RegistryError(
                f"model {model_name} is not registered in {mlflow.get_registry_uri()}; "
                "run the training job first"
            ) from None
        raise
    return {alias: int(version) for alias, version in model.aliases.items()}


def set_version_tags(model_name: str, version: int, tags: dict[str, object]) -> None:
    """Write `tags` (values as strings) on a model version."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value))


def register_challenger(model_name: str, training_run: TrainingRun) -> int:
    """Register the run's model as a new version of `model_name`, aliased `challenger`."""
    check_model_name(model_name)
    tags = {**training_run.tags, "run_id": training_run.run_id}
    tags.update({k: str(v) for k, v in training_run.metrics.as_dict(METRIC_PREFIX).items()})
    registered = mlflow.register_model(training_run.model_uri, model_name, tags=tags)
    version = int(registered.version)
    MlflowClient().set_registered_model_alias(model_name, CHALLENGER, str(version))
    log.info("registered %s version %d as %s", model_name, version, CHALLENGER)
    return version


def promote(model_name: str, version: int) -> int | None:
    """Make `version` the champion; the champion it replaces becomes `previous_champion`.

    Returns the replaced champion's version (None if there was none or it already was `version`).
    """
    client = MlflowClient()
    current = get_aliases(model_name).get(CHAMPION)
    if current == version:
        return None
    if current is not None:
        # Moved first: a failure between the two calls leaves the old champion in place.
        client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, str(current))
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    log.info("%s: champion is now version %d (was %s)", model_name, version, current)
    return current


@dataclass(frozen=True)
class Rollback:
    """`champion` went back from `rolled_back` to `champion`."""

    model_name: str
    champion: int
    rolled_back: int


def rollback(model_name: str) -> Rollback:
    """Move `champion` back to `previous_champion`.

    The version that was champion gets `rolled_back` (and loses `challenger` if it held it, so
    no alias routes traffic to it); `previous_champion` is removed, so a second rollback without
    a promotion in between fails instead of flipping back to the version just rolled back.
    """
    client = MlflowClient()
    aliases = get_aliases(model_name)
    champion, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS_CHAMPION)
    if champion is None:
        raise RollbackError(f"model {model_name} has no {CHAMPION}: nothing to roll back")
    if previous is None:
        raise RollbackError(
            f"model {model_name} has no {PREVIOUS_CHAMPION} to roll back to: version {champion} is "
            "the first champion, or a rollback already happened since the last promotion"
        )
    client.set_registered_model_alias(model_name, CHAMPION, str(previous))
    client.set_registered_model_alias(model_name, ROLLED_BACK, str(champion))
    client.delete_registered_model_alias(model_name, PREVIOUS_CHAMPION)
    if aliases.get(CHALLENGER) == champion:
        client.delete_registered_model_alias(model_name, CHALLENGER)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    set_version_tags(model_name, champion, {"rolled_back_at": now, "rolled_back_to": previous})
    set_version_tags(model_name, previous, {"restored_at": now, "restored_from": champion})
    log.info("%s: rolled champion back from version %d to %d", model_name, champion, previous)
    return Rollback(model_name, previous, champion)


@dataclass(frozen=True)
class VersionStatus:
    """One model version as `mlops model status` shows it."""

    version: int
    aliases: list[str]
    created: dt.datetime
    run_id: str | None
    primary_metric: str
    metrics: dict[str, float] = field(default_factory=dict)  # the task type's, in its order
    gate_outcome: str | None = None
    gate_reason: str | None = None
    rollout_outcome: str | None = None  # how a live experiment with it ended
    rollout_reason: str | None = None

    @property
    def primary_value(self) -> float | None:
        """The held-out value of the problem's primary metric (None if not recorded)."""
        return self.metrics.get(self.primary_metric)


def model_status(model_name: str, limit: int = 20, spec: ProblemSpec | None = None) -> list[VersionStatus]:
    """The newest `limit` versions with their aliases, held-out metrics and gate outcome.

    The metrics are those of the problem's task type (`spec`, else the loaded problem).
    """
    spec = spec or load_problem()
    by_version: dict[int, list[str]] = {}
    for alias, version in sorted(get_aliases(model_name).items()):
        by_version.setdefault(version, []).append(alias)
    found = MlflowClient().search_model_versions(f"name='{model_name}'")
    numbers = sorted((int(v.version) for v in found), reverse=True)[:limit]
    return [_status(get_version(model_name, number), by_version.get(number, []), spec) for number in numbers]


def _status(version: ModelVersion, aliases: list[str], spec: ProblemSpec) -> VersionStatus:
    tags = version.tags
    metrics = {
        name: float(tags[METRIC_PREFIX + name]) for name in spec.metric_names if METRIC_PREFIX + name in tags
    }
    return VersionStatus(
        version=int(version.version),
        aliases=aliases,
        created=dt.datetime.fromtimestamp(version.creation_timestamp / 1000, dt.UTC),
        run_id=version.run_id,
        primary_metric=spec.primary_metric,
        metrics=metrics,
        gate_outcome=tags.get(GATE_OUTCOME_TAG),
        gate_reason=tags.get("gate_reason"),
        rollout_outcome=tags.get(ROLLOUT_OUTCOME_TAG),
        rollout_reason=tags.get(ROLLOUT_REASON_TAG),
    )
