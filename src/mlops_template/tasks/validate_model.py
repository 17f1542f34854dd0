"""Task `validate_model`: the validation gate between training and deployment.

It judges the version the `challenger` alias points at (set by task `train`) and moves the
`champion` alias to it if it passes. A rejected challenger is a successful task: the champion
stays, and task `deploy` finds the endpoint already serving it. A missing alias or table is an error.
"""

from __future__ import annotations

from pydantic import Field

from mlops_template.features.lookups import build_training_set
from mlops_template.platform import Platform
from mlops_template.registry.gate import validate_challenger
from mlops_template.registry.versions import CHALLENGER, ModelName, RegistryError, get_aliases
from mlops_template.tasks.common import TaskConfig, task_entry_point
from mlops_template.tasks.train import TRIPS_PRODUCER
from mlops_template.training.config import TrainingConfig, TrainingParams


class ValidateModelConfig(TaskConfig):
    model_name: ModelName
    trips_table: str
    pickup_features_table: str
    dropoff_features_table: str
    training_params: TrainingParams = Field(default_factory=TrainingConfig)


def run(platform: Platform, config: ValidateModelConfig) -> None:
    platform.configure_mlflow()
    version = challenger_version(config.model_name)
    trips = platform.read_table(config.trips_table, produced_by=TRIPS_PRODUCER)
    training_set = build_training_set(
        platform, trips, config.pickup_features_table, config.dropoff_features_table
    )
    validate_challenger(config.model_name, version, training_set, config.training_params)


def challenger_version(model_name: str) -> int:
    """The version the `challenger` alias points at, or a RegistryError saying to train first."""
    version = get_aliases(model_name).get(CHALLENGER)
    if version is None:
        raise RegistryError(
            f"model {model_name} has no '{CHALLENGER}' alias: run task train of job pipeline first"
        )
    return version


main = task_entry_point(ValidateModelConfig, run)
