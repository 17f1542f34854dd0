"""Task `validate_model`: the validation gate between training and deployment.

A rejected challenger is a successful task with `promoted` = "false": the job's condition task
reads it and skips deployment. A missing model version or table is an error.
"""

from __future__ import annotations

from pydantic import Field

from mlops_template.features.lookups import build_training_set
from mlops_template.platform import Platform
from mlops_template.registry.gate import validate_challenger
from mlops_template.registry.versions import ModelName
from mlops_template.tasks.common import TaskConfig, task_entry_point
from mlops_template.tasks.train import TRIPS_PRODUCER
from mlops_template.training.config import TrainingConfig, TrainingParams


class ValidateModelConfig(TaskConfig):
    model_name: ModelName
    model_version: int = Field(ge=1)
    trips_table: str
    pickup_features_table: str
    dropoff_features_table: str
    training_params: TrainingParams = Field(default_factory=TrainingConfig)


def run(platform: Platform, config: ValidateModelConfig) -> None:
    platform.configure_mlflow()
    trips = platform.read_table(config.trips_table, produced_by=TRIPS_PRODUCER)
    training_set = build_training_set(
        platform, trips, config.pickup_features_table, config.dropoff_features_table
    )
    result = validate_challenger(
        config.model_name, config.model_version, training_set, config.training_params
    )
    platform.task_values.set("promoted", "true" if result.promoted else "false")
    platform.task_values.set("champion_version", result.champion_after)


main = task_entry_point(ValidateModelConfig, run)
