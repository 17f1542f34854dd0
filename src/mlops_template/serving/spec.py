"""The endpoint specification: served entities, traffic routes, sticky A/B, inference table, tags.

`EndpointConfig` is what the deploy task wants served. `build_endpoint_config` turns it into the
Databricks SDK request objects the deployer sends, to Model Serving or to the laptop's local
serving control plane alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    EndpointCoreConfigInput,
    EndpointTag,
    Route,
    ServedEntityInput,
    TrafficConfig,
)
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_template.platform.names import split_name

CHAMPION = "champion"
CHALLENGER = "challenger"
_NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
# "An endpoint name can consist of alphanumeric characters, dashes, and underscores"
# (databricks-sdk serving.py, CreateServingEndpoint.name).
ENDPOINT_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,63}")

WorkloadSize = Literal["Small", "Medium", "Large"]
# The serving endpoint permission levels (databricks-sdk `ServingEndpointPermissionLevel`).
PermissionLevel = Literal["CAN_MANAGE", "CAN_QUERY", "CAN_VIEW"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServedEntitySpec(_Spec):
    """One registered model version behind the endpoint, and the environment variables it is
    served with (`ServedEntityInput.environment_vars`; left out of its dump when none, so the
    served entity ids of entities without any stay as they were)."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=63)
    entity_name: str
    entity_version: str = Field(pattern=r"^[0-9]+$")
    workload_size: WorkloadSize = "Small"
    scale_to_zero: bool = True
    environment_vars: dict[str, str] = Field(default_factory=dict, exclude_if=lambda value: not value)

    @field_validator("entity_name")
    @classmethod
    def _three_level(cls, value: str) -> str:
        split_name(value)
        return value

    @property
    def model_uri(self) -> str:
        return f"models:/{self.entity_name}/{self.entity_version}"


class RouteSpec(_Spec):
    """The share of requests one served entity receives."""

    served_entity_name: str
    traffic_percentage: int = Field(ge=0, le=100)


class StickyABSpec(_Spec):
    """Champion / challenger assignment by a stable hash of a key column, done by the registered
    A/B model `<model>_ab` version `model_version` (see `ab_model`)."""

    key_column: str = Field(min_length=1)
    challenger_share: float = Field(gt=0, lt=1)
    champion_version: str
    challenger_version: str
    model_version: str


class InferenceTableSpec(_Spec):
    """The AI-Gateway inference table: `<catalog>.<schema>.<prefix>_payload`."""

    enabled: bool
    catalog_name: str
    schema_name: str
    table_name_prefix: str

    @model_validator(mode="after")
    def _valid_table_name(self) -> InferenceTableSpec:
        split_name(self.payload_table)
        return self

    @property
    def payload_table(self) -> str:
        return f"{self.catalog_name}.{self.schema_name}.{self.table_name_prefix}_payload"


class PermissionSpec(_Spec):
    """A group's permission on the endpoint, granted on top of the permissions it already has."""

    group_name: str = Field(min_length=1)
    permission_level: PermissionLevel = "CAN_QUERY"


class EndpointConfig(_Spec):
    """Everything needed to create or update one serving endpoint."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=63)
    model_name: str
    served_entities: list[ServedEntitySpec] = Field(min_length=1, max_length=10)
    routes: list[RouteSpec]
    sticky_ab: StickyABSpec | None = None
    inference_table: InferenceTableSpec
    tags: dict[str, str] = Field(default_factory=dict)
    permissions: list[PermissionSpec] = Field(default_factory=list)

    @field_validator("model_name")
    @classmethod
    def _three_level(cls, value: str) -> str:
        split_name(value)
        return value

    @model_validator(mode="after")
    def _routes_cover_entities(self) -> EndpointConfig:
        names = [entity.name for entity in self.served_entities]
        if len(set(names)) != len(names):
            raise ValueError(f"served entity names must be unique, got {names}")
        routed = [route.served_entity_name for route in self.routes]
        if sorted(routed) != sorted(names):
            raise ValueError(f"traffic routes {routed} must name each served entity {names} exactly once")
        total = sum(route.traffic_percentage for route in self.routes)
        if total != 100:
            shares = ", ".join(f"{r.served_entity_name}: {r.traffic_percentage}" for r in self.routes)
            raise ValueError(f"traffic routes must sum to 100 percent, got {total} ({shares})")
        return self


@dataclass(frozen=True)
class DatabricksEndpointRequest:
    """The SDK objects that create or update the endpoint on Databricks."""

    config: EndpointCoreConfigInput
    ai_gateway: AiGatewayConfig
    tags: list[EndpointTag]


class MissingChampionError(LookupError):
    """The model has no version with alias `champion`."""


def served_versions(client: MlflowClient, model_name: str) -> tuple[str, str | None]:
    """The versions behind `champion` and `challenger`; challenger is None when absent or the same."""
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION).version
    except MlflowException as error:
        raise MissingChampionError(
            f"model {model_name} has no version with alias '{CHAMPION}': train and promote a model first "
            f"({error.message})"
        ) from None
    try:
        challenger = client.get_model_version_by_alias(model_name, CHALLENGER).version
    except MlflowException:
        return str(champion), None
    return str(champion), None if challenger == champion else str(challenger)


def ab_model_name(model_name: str) -> str:
    """The registered name of the sticky A/B model wrapping `model_name`'s champion and challenger."""
    return f"{model_name}_ab"


def served_entity_name(model_name: str, version: str) -> str:
    """Databricks' default served entity name: the model's own name and its version."""
    return f"{model_name.rsplit('.', 1)[-1]}-{version}"


def endpoint_config(
    *,
    endpoint_name: str,
    model_name: str,
    champion_version: str,
    challenger_version: str | None,
    challenger_traffic_percent: int,
    workload_size: WorkloadSize,
    scale_to_zero: bool,
    inference_table: InferenceTableSpec,
    git_sha: str,
    sticky_ab: StickyABSpec | None = None,
    query_group: str = "",
    environment_vars: Mapping[str, str] | None = None,
) -> EndpointConfig:
    """The endpoint serving the champion alone; or, with `sticky_ab`, the sticky A/B model as its only
    served entity; or, with a `challenger_version` and a positive `challenger_traffic_percent`, a
    canary: champion and challenger routed 100 - p / p percent per request, as Databricks splits
    an endpoint's traffic between served entities ("Serve multiple models to a model serving
    endpoint", docs.databricks.com: `traffic_config.routes`, e.g. 90 / 10). A `query_group` gets
    CAN_QUERY on the endpoint. Every served entity gets `environment_vars`."""
    if not 0 <= challenger_traffic_percent <= 100:
        raise ValueError(
            f"the challenger's traffic percent must be within 0..100, got {challenger_traffic_percent}"
        )
    tags = {"model_name": model_name, "model_version": champion_version, "git_sha": git_sha}
    if sticky_ab is not None:
        served_model, versions, shares = ab_model_name(model_name), [sticky_ab.model_version], [100]
        tags |= {
            "challenger_version": sticky_ab.challenger_version,
            "ab_model_version": sticky_ab.model_version,
        }
    elif challenger_version is not None and challenger_traffic_percent > 0:
        served_model, versions = model_name, [champion_version, challenger_version]
        shares = [100 - challenger_traffic_percent, challenger_traffic_percent]
        tags["challenger_version"] = challenger_version
    else:
        served_model, versions, shares = model_name, [champion_version], [100]
    entities = [
        ServedEntitySpec(
            name=served_entity_name(served_model, version),
            entity_name=served_model,
            entity_version=version,
            workload_size=workload_size,
            scale_to_zero=scale_to_zero,
            environment_vars=dict(environment_vars or {}),
        )
        for version in versions
    ]
    routes = [
        RouteSpec(served_entity_name=entity.name, traffic_percentage=share)
        for entity, share in zip(entities, shares, strict=True)
    ]
    return EndpointConfig(
        name=endpoint_name,
        model_name=model_name,
        served_entities=entities,
        routes=routes,
        sticky_ab=sticky_ab,
        inference_table=inference_table,
        tags=tags,
        permissions=[PermissionSpec(group_name=query_group)] if query_group else [],
    )


def served_entity_fields(entity: ServedEntitySpec) -> dict[str, Any]:
    """The fields a served entity has in the SDK's `ServedEntityInput` and `ServedEntityOutput`."""
    return {
        "name": entity.name,
        "entity_name": entity.entity_name,
        "entity_version": entity.entity_version,
        "workload_size": entity.workload_size,
        "scale_to_zero_enabled": entity.scale_to_zero,
        "environment_vars": dict(entity.environment_vars) or None,
    }


def build_endpoint_config(config: EndpointConfig) -> DatabricksEndpointRequest:
    """The Databricks SDK request objects for `config`."""
    entities = [ServedEntityInput(**served_entity_fields(entity)) for entity in config.served_entities]
    routes = [
        Route(served_entity_name=route.served_entity_name, traffic_percentage=route.traffic_percentage)
        for route in config.routes
    ]
    table = config.inference_table
    gateway = AiGatewayConfig(
        inference_table_config=AiGatewayInferenceTableConfig(
            enabled=table.enabled,
            catalog_name=table.catalog_name,
            schema_name=table.schema_name,
            table_name_prefix=table.table_name_prefix,
        )
    )
    return DatabricksEndpointRequest(
        config=EndpointCoreConfigInput(
            name=config.name, served_entities=entities, traffic_config=TrafficConfig(routes=routes)
        ),
        ai_gateway=gateway,
        tags=[EndpointTag(key=key, value=value) for key, value in sorted(config.tags.items())],
    )
