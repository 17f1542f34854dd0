"""Task `train`: build the point-in-time training set, train, log to MLflow, register as challenger.

The new version gets the alias `challenger`, which task `validate_model` reads.
"""

from __future__ import annotations

from pydantic import Field

from mlops_template.features.lookups import build_training_set
from mlops_template.platform import Platform
from mlops_template.registry.versions import ModelName, register_challenger
from mlops_template.tasks.common import TaskConfig, task_entry_point
from mlops_template.training.config import TrainingConfig, TrainingParams
from mlops_template.training.model import train_model
from mlops_template.training.tracking import RunContext, log_training_run

TRIPS_PRODUCER = "task prepare_data of job pipeline"


class TrainConfig(TaskConfig):
    trips_table: str
    pickup_features_table: str
    dropoff_features_table: str
    experiment_name: str
    model_name: ModelName
    bundle_target: str
    job_run_id: str
    git_sha: str = ""
    training_params: TrainingParams = Field(default_factory=TrainingConfig)


def run(platform: Platform, config: TrainConfig) -> None:
    platform.configure_mlflow()
    trips = platform.read_table(config.trips_table, produced_by=TRIPS_PRODUCER)
    training_set = build_training_set(
        platform, trips, config.pickup_features_table, config.dropoff_features_table
    )
    trained = train_model(training_set, config.training_params)
    context = RunContext(
        trips_table=config.trips_table,
        pickup_features_table=config.pickup_features_table,
        dropoff_features_table=config.dropoff_features_table,
        bundle_target=config.bundle_target,
        job_run_id=config.job_run_id,
        git_sha=config.git_sha,
    )
    training_run = log_training_run(platform.experiment_id(config.experiment_name), trained, context)
    register_challenger(config.model_name, training_run)


main = task_entry_point(TrainConfig, run)
