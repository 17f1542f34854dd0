"""Task `validate_model`: the validation gate between training and deployment.

It judges the version the `challenger` alias points at (set by task `train`): promoted (the
`champion` alias moves to it), rejected, or, under `--rollout=canary` / `--rollout=ab_test`, an
experiment that task `deploy` serves beside the champion (see `registry/gate.py`). A rejected
challenger is a successful task: the champion stays, and task `deploy` finds the endpoint already
serving it. A missing alias or table is an error.
"""

from __future__ import annotations

from pydantic import Field

from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.registry.experiment import RolloutPolicy
from mlops_template.registry.gate import validate_challenger
from mlops_template.registry.versions import CHALLENGER, ModelName, RegistryError, get_aliases
from mlops_template.tasks.common import PipelineTaskConfig, task_entry_point
from mlops_template.tasks.features import PREPARED_PRODUCER
from mlops_template.training.config import TrainingParams, default_training_config
from mlops_template.training.dataset import build_training_set


class ValidateModelConfig(PipelineTaskConfig):
    model_name: ModelName
    training_params: TrainingParams = Field(default_factory=default_training_config)
    rollout: RolloutPolicy = "replace"


def run(platform: Platform, config: ValidateModelConfig) -> None:
    spec = load_problem()
    platform.configure_mlflow()
    version = challenger_version(config.model_name)
    rows = platform.read_table(spec.prepared_table_name(config.schema_), produced_by=PREPARED_PRODUCER)
    training_set = build_training_set(platform, spec, rows, config.schema_)
    validate_challenger(
        config.model_name, version, training_set, config.training_params, spec, rollout=config.rollout
    )


def challenger_version(model_name: str) -> int:
    """The version the `challenger` alias points at, or a RegistryError saying to train first."""
    version = get_aliases(model_name).get(CHALLENGER)
    if version is None:
        raise RegistryError(
            f"model {model_name} has no '{CHALLENGER}' alias: run task train of job pipeline first"
        )
    return version


main = task_entry_point(ValidateModelConfig, run)
