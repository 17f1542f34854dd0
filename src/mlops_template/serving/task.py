"""Task `deploy`: serve the champion (with a challenger share or a sticky A/B model) on an endpoint."""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from pydantic import Field, model_validator

from mlops_template.platform import Platform
from mlops_template.serving.ab_registry import register_ab_model
from mlops_template.serving.spec import (
    EndpointConfig,
    InferenceTableSpec,
    StickyABSpec,
    WorkloadSize,
    endpoint_config,
    served_versions,
)
from mlops_template.tasks.common import TaskConfig, task_entry_point

log = logging.getLogger(__name__)


class DeployConfig(TaskConfig):
    model_name: str
    endpoint_name: str
    catalog: str
    schema_name: str = Field(alias="schema")
    inference_table_enabled: bool = False
    inference_table_prefix: str = ""  # default: the endpoint name with '-' as '_'
    workload_size: WorkloadSize = "Small"
    scale_to_zero: bool = True
    challenger_traffic_percent: int = Field(default=0, ge=0, le=100)
    ab_key_column: str = ""  # empty: no sticky A/B
    ab_challenger_share: float = Field(default=0.5, gt=0, lt=1)
    experiment_name: str = ""  # where the A/B model is logged (needed with --ab-key-column)
    git_sha: str = ""

    @model_validator(mode="after")
    def _one_way_to_split(self) -> DeployConfig:
        if self.ab_key_column and self.challenger_traffic_percent:
            raise ValueError(
                "choose --challenger-traffic-percent (random per request) "
                "or --ab-key-column (sticky per key), not both"
            )
        if self.ab_key_column and not self.experiment_name:
            raise ValueError("--ab-key-column needs --experiment-name to log the A/B model in")
        return self

    @property
    def table_prefix(self) -> str:
        return self.inference_table_prefix or self.endpoint_name.replace("-", "_")


def run(platform: Platform, config: DeployConfig) -> None:
    platform.endpoint_deployer().deploy(endpoint_spec(platform, config))


def endpoint_spec(platform: Platform, config: DeployConfig) -> EndpointConfig:
    """The endpoint the task deploys: champion (+ challenger or the sticky A/B model), table, tags."""
    platform.configure_mlflow()
    champion, challenger = served_versions(MlflowClient(), config.model_name)
    log.info("champion: version %s; challenger: %s", champion, challenger or "none")
    sticky_ab = _sticky_ab(platform, config, champion, challenger)
    return endpoint_config(
        endpoint_name=config.endpoint_name,
        model_name=config.model_name,
        champion_version=champion,
        challenger_version=challenger,
        challenger_traffic_percent=config.challenger_traffic_percent,
        workload_size=config.workload_size,
        scale_to_zero=config.scale_to_zero,
        inference_table=InferenceTableSpec(
            enabled=config.inference_table_enabled,
            catalog_name=config.catalog,
            schema_name=config.schema_name,
            table_name_prefix=config.table_prefix,
        ),
        git_sha=config.git_sha or "unknown",
        sticky_ab=sticky_ab,
    )


def _sticky_ab(
    platform: Platform, config: DeployConfig, champion: str, challenger: str | None
) -> StickyABSpec | None:
    if not config.ab_key_column:
        return None
    if challenger is None:
        log.warning("no challenger distinct from the champion: serving the champion alone, without A/B")
        return None
    return register_ab_model(
        config.model_name,
        champion_version=champion,
        challenger_version=challenger,
        key_column=config.ab_key_column,
        challenger_share=config.ab_challenger_share,
        experiment_id=platform.experiment_id(config.experiment_name),
    )


main = task_entry_point(DeployConfig, run)
