"""Task `deploy`: serve the champion (with a challenger share or a sticky A/B model) on an endpoint."""

from __future__ import annotations

import logging
from datetime import timedelta

from mlflow import MlflowClient
from pydantic import Field, field_validator, model_validator

from mlops_template.platform import Platform
from mlops_template.registry.versions import GATE_OUTCOME_TAG, REJECTED
from mlops_template.serving.ab_registry import register_ab_model
from mlops_template.serving.deploy import endpoint_deployer
from mlops_template.serving.spec import (
    ENDPOINT_NAME_PATTERN,
    EndpointConfig,
    InferenceTableSpec,
    MissingChampionError,
    StickyABSpec,
    WorkloadSize,
    endpoint_config,
    served_versions,
)
from mlops_template.tasks.common import PipelineTaskConfig, task_entry_point

log = logging.getLogger(__name__)


class DeployConfig(PipelineTaskConfig):
    """`--schema=catalog.schema`, as every pipeline task takes it, is where the inference tables go."""

    model_name: str
    endpoint_name: str
    inference_table_enabled: bool = False
    inference_table_prefix: str = ""  # default: the endpoint name with '-' as '_'
    workload_size: WorkloadSize = "Small"
    scale_to_zero: bool = True
    challenger_traffic_percent: int = Field(default=0, ge=0, le=100)
    ab_key_column: str = ""  # empty: no sticky A/B
    ab_challenger_share: float = Field(default=0.5, gt=0, lt=1)
    experiment_name: str = ""  # where the A/B model is logged (needed with --ab-key-column)
    git_sha: str = ""
    query_group: str = ""  # a group granted CAN_QUERY on the endpoint; empty: none
    ready_timeout_minutes: int = Field(default=45, gt=0)  # per wait for a config update

    @field_validator("endpoint_name")
    @classmethod
    def _valid_endpoint_name(cls, name: str) -> str:
        if not ENDPOINT_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"'{name}' is not a valid serving endpoint name (ASCII letters, digits, '-' and '_', at most "
                "63 characters); in dev it carries your user name: deploy with --var endpoint_name=<name>"
            )
        return name

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
    def catalog(self) -> str:
        return self.schema_.split(".")[0]

    @property
    def schema_name(self) -> str:
        """The schema's own name, without its catalog."""
        return self.schema_.split(".")[1]

    @property
    def table_prefix(self) -> str:
        return self.inference_table_prefix or self.endpoint_name.replace("-", "_")


def run(platform: Platform, config: DeployConfig) -> None:
    """Deploy the wanted endpoint unless it already serves it (the task runs after every validation).

    Without a champion yet (the first challenger was rejected) there is nothing to serve: the task
    says so and succeeds, and the first run whose challenger passes the gate deploys the endpoint.
    """
    deployer = endpoint_deployer(platform, ready_timeout=timedelta(minutes=config.ready_timeout_minutes))
    try:
        spec = endpoint_spec(platform, config)
    except MissingChampionError as error:
        log.warning("nothing to deploy: %s", error)
        return
    served = ", ".join(
        f"{entity.entity_name} v{entity.entity_version} {route.traffic_percentage}%"
        for entity, route in zip(spec.served_entities, spec.routes, strict=True)
    )
    if deployer.serves(spec):
        log.info("endpoint %s already serves %s: nothing to deploy", spec.name, served)
        return
    log.info("endpoint %s does not serve %s yet: deploying", spec.name, served)
    deployer.deploy(spec)


def endpoint_spec(platform: Platform, config: DeployConfig) -> EndpointConfig:
    """The endpoint the task deploys: champion (+ challenger or the sticky A/B model), table, tags."""
    platform.configure_mlflow()
    client = MlflowClient()
    champion, challenger = served_versions(client, config.model_name)
    if challenger is not None and _rejected(client, config.model_name, challenger):
        log.info("challenger version %s was rejected by the validation gate: not served", challenger)
        challenger = None
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
        query_group=config.query_group,
    )


def _rejected(client: MlflowClient, model_name: str, version: str) -> bool:
    """Whether the validation gate rejected this version (its `gate_outcome` tag)."""
    return client.get_model_version(model_name, version).tags.get(GATE_OUTCOME_TAG) == REJECTED


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
