"""Task `train`: build the point-in-time training set, train, log to MLflow, register as challenger.

The new version gets the alias `challenger`, which task `validate_model` reads. With
`serving_features=lookup` the model is logged with its feature lookups (`fe.log_model` on
Databricks), so a request sends the request inputs and the served model looks the features up;
with `request` (no online store, e.g. Databricks Free Edition) it is logged plainly and a request
sends every model input.
"""

from __future__ import annotations

from pydantic import Field

from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.registry.versions import ModelName, register_challenger
from mlops_template.tasks.common import PipelineTaskConfig, ServingFeatures, task_entry_point
from mlops_template.tasks.features import PREPARED_PRODUCER
from mlops_template.training.config import TrainingParams, default_training_config
from mlops_template.training.dataset import build_training_set, feature_training_set
from mlops_template.training.model import check_input_types, train_model
from mlops_template.training.tracking import FeatureServing, RunContext, log_training_run


class TrainConfig(PipelineTaskConfig):
    experiment_name: str
    model_name: ModelName
    bundle_target: str
    job_run_id: str
    git_sha: str = ""
    training_params: TrainingParams = Field(default_factory=default_training_config)
    serving_features: ServingFeatures = "lookup"


def run(platform: Platform, config: TrainConfig) -> None:
    spec = load_problem()
    platform.configure_mlflow()
    prepared_table = spec.prepared_table_name(config.schema_)
    rows = platform.read_table(prepared_table, produced_by=PREPARED_PRODUCER)
    training_set = build_training_set(platform, spec, rows, config.schema_)
    check_input_types(training_set, spec)
    trained = train_model(training_set, config.training_params, spec)
    context = RunContext(
        prepared_table=prepared_table,
        feature_tables=spec.feature_table_names(config.schema_),
        bundle_target=config.bundle_target,
        job_run_id=config.job_run_id,
        git_sha=config.git_sha,
    )
    lookups = None
    if config.serving_features == "lookup":
        serving_set = feature_training_set(platform, spec, rows, config.schema_, with_row_id=False)
        lookups = FeatureServing(platform.feature_store, serving_set)
    training_run = log_training_run(platform.experiment_id(config.experiment_name), trained, context, lookups)
    register_challenger(config.model_name, training_run)


main = task_entry_point(TrainConfig, run)
