"""Deploy an `EndpointConfig`: the deployer protocol and Model Serving through the databricks-sdk.

`endpoint_deployer(platform)` picks the implementation: Model Serving on Databricks, else the one
the platform's package registers (the laptop's runs this same SDK deployer against its local
serving control plane).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, OperationFailed, ResourceConflict
from databricks.sdk.service.serving import (
    AiGatewayInferenceTableConfig,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    EndpointTag,
    ServedEntityInput,
    ServedEntityOutput,
    ServingEndpointAccessControlRequest,
    ServingEndpointDetailed,
    ServingEndpointPermissionLevel,
)

from mlops_template.platform import DatabricksPlatform, Platform, registered_for
from mlops_template.serving.spec import (
    DatabricksEndpointRequest,
    EndpointConfig,
    PermissionSpec,
    build_endpoint_config,
)

log = logging.getLogger(__name__)

DEPLOYER_ENTRY_POINTS = "mlops_template.endpoint_deployer"
MANAGED_TAGS = frozenset({"model_name", "model_version", "challenger_version", "ab_model_version", "git_sha"})
# The first build of a CPU endpoint can take close to 30 minutes; the CLI itself waits 35.
DEFAULT_READY_TIMEOUT = timedelta(minutes=45)


class EndpointDeploymentError(RuntimeError):
    """The endpoint did not become ready with the new config, or its check failed."""


class EndpointDeployer(Protocol):
    """Creates or updates a serving endpoint from its spec and waits until it serves it."""

    def serves(self, config: EndpointConfig) -> bool:
        """Whether the endpoint already serves `config` (entities, routes, table, permissions)."""
        ...

    def deploy(self, config: EndpointConfig) -> None: ...

    def delete(self, name: str) -> bool:
        """Delete the endpoint; False when there was none."""
        ...

    def query(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Send `records` (`dataframe_records`) to the endpoint; its JSON answer."""
        ...


def endpoint_deployer(platform: Platform, *, ready_timeout: timedelta | None = None) -> EndpointDeployer:
    """The serving control plane of `platform`: Model Serving on Databricks, else the deployer its
    package registers under `DEPLOYER_ENTRY_POINTS`, called with the platform.

    `ready_timeout` bounds each wait for a config update (None: the default).
    """
    if isinstance(platform, DatabricksPlatform):
        return DatabricksEndpointDeployer(timeout=ready_timeout)
    return registered_for(platform, DEPLOYER_ENTRY_POINTS)(platform, timeout=ready_timeout)


class DatabricksEndpointDeployer:
    """Model Serving through the SDK: create or update, wait until ready, inference table, tags,
    permissions. An update already in progress is waited for, then ours is applied."""

    def __init__(self, client: WorkspaceClient | None = None, *, timeout: timedelta | None = None) -> None:
        self._client = client or WorkspaceClient()
        self.timeout = timeout or DEFAULT_READY_TIMEOUT

    def serves(self, config: EndpointConfig) -> bool:
        existing = self._existing(config.name)
        if existing is None or not _settled_and_ready(existing):
            return False
        request = build_endpoint_config(config)
        return (
            _serves_entities(existing, request)
            and _table_matches(existing, request)
            and not self._missing_grants(existing, config.permissions)
        )

    def deploy(self, config: EndpointConfig) -> None:
        request = build_endpoint_config(config)
        endpoints = self._client.serving_endpoints
        existing = self._existing(config.name)
        updated = True
        if existing is None:
            log.info("creating serving endpoint %s", config.name)
            endpoints.create(
                name=config.name,
                config=request.config,
                ai_gateway=request.ai_gateway if config.inference_table.enabled else None,
                tags=request.tags,
            )
        else:
            existing = self._after_update_in_progress(existing)
            if _serves_entities(existing, request):
                log.info("serving endpoint %s already serves these entities and routes", config.name)
                updated = False  # an earlier update that failed does not concern this deploy
            else:
                self._update_config(config.name, request)
        ready = _require_ready(self._wait_until_not_updating(config.name, ours=True) if updated else existing)
        if existing is not None:
            assert request.ai_gateway.inference_table_config is not None
            self._update_inference_table(ready, request.ai_gateway.inference_table_config)
            self._update_tags(ready, request.tags)
        self._grant(ready, config.permissions)
        log.info("serving endpoint %s is ready: %s", config.name, [e.name for e in config.served_entities])

    def delete(self, name: str) -> bool:
        try:
            self._client.serving_endpoints.delete(name)
        except NotFound:
            return False
        return True

    def query(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        return self._client.serving_endpoints.query(name=name, dataframe_records=records).as_dict()

    def _existing(self, name: str) -> ServingEndpointDetailed | None:
        try:
            return self._client.serving_endpoints.get(name)
        except NotFound:
            return None

    def _after_update_in_progress(self, endpoint: ServingEndpointDetailed) -> ServingEndpointDetailed:
        """The endpoint once an update already in progress (another deploy's) has ended."""
        if _config_update(endpoint) != EndpointStateConfigUpdate.IN_PROGRESS:
            return endpoint
        log.info("serving endpoint %s has an update in progress: waiting for it first", endpoint.name)
        return self._wait_until_not_updating(str(endpoint.name), ours=False)

    def _update_config(self, name: str, request: DatabricksEndpointRequest) -> None:
        """Apply the new config; an update started meanwhile (409) is waited for, then ours applied."""
        log.info("updating serving endpoint %s", name)
        for attempt in (1, 2):
            try:
                self._client.serving_endpoints.update_config(
                    name=name,
                    served_entities=request.config.served_entities,
                    traffic_config=request.config.traffic_config,
                )
                return
            except ResourceConflict as error:
                if attempt == 2:
                    raise EndpointDeploymentError(
                        f"serving endpoint {name} kept refusing the update: {error}. "
                        "Another deployment keeps updating it; run this deploy again when it is done."
                    ) from None
                log.info(
                    "serving endpoint %s refused the update while another is in progress (%s): "
                    "waiting for it",
                    name,
                    error,
                )
                self._wait_until_not_updating(name, ours=False)

    def _wait_until_not_updating(self, name: str, *, ours: bool) -> ServingEndpointDetailed:
        """The SDK's waiter, its failures turned into errors that say what still serves; when the
        update is not `ours`, its failure only means ours can be applied now."""
        endpoints = self._client.serving_endpoints
        try:
            return endpoints.wait_get_serving_endpoint_not_updating(name, timeout=self.timeout)
        except OperationFailed:
            if not ours:  # the other update failed: ours can still be applied
                return endpoints.get(name)
            update = _config_update(endpoints.get(name))
            raise EndpointDeploymentError(
                f"serving endpoint {name}: the config update ended {update.value if update else None}; "
                "the endpoint keeps serving its previous config. "
                "See the endpoint's events and build logs in the workspace."
            ) from None
        except TimeoutError:
            state = endpoints.get(name).state
            ready = state.ready.value if state and state.ready else None
            update = state.config_update.value if state and state.config_update else None
            raise EndpointDeploymentError(
                f"serving endpoint {name} was not ready after {self.timeout} (ready: {ready}, "
                f"config update: {update}); until the new config is ready Databricks keeps serving "
                "the previous one. Raise --ready-timeout-minutes (variable serving_ready_timeout_minutes) "
                "or see the endpoint's events and build logs in the workspace."
            ) from None

    def _update_inference_table(
        self, existing: ServingEndpointDetailed, wanted: AiGatewayInferenceTableConfig
    ) -> None:
        """Enable, move or disable the AI-Gateway inference table, keeping other gateway settings."""
        gateway = existing.ai_gateway
        current = gateway.inference_table_config if gateway else None
        if _same_table(current, wanted):
            return  # never call the gateway API when nothing changes (it may be unavailable)
        location = (wanted.catalog_name, wanted.schema_name, wanted.table_name_prefix)
        kept: dict[str, Any] = {}
        if gateway is not None:
            kept = {
                "fallback_config": gateway.fallback_config,
                "guardrails": gateway.guardrails,
                "rate_limits": gateway.rate_limits,
                "usage_tracking_config": gateway.usage_tracking_config,
            }
        if (
            current
            and current.enabled
            and wanted.enabled
            and location
            != (
                current.catalog_name,
                current.schema_name,
                current.table_name_prefix,
            )
        ):
            # Databricks refuses to change the table's location while it is enabled.
            self._client.serving_endpoints.put_ai_gateway(
                existing.name, inference_table_config=AiGatewayInferenceTableConfig(enabled=False), **kept
            )
        self._client.serving_endpoints.put_ai_gateway(existing.name, inference_table_config=wanted, **kept)

    def _update_tags(self, existing: ServingEndpointDetailed, tags: list[EndpointTag]) -> None:
        current = {t.key: t.value for t in existing.tags or []}
        stale = sorted({key for key in current if key in MANAGED_TAGS} - {t.key for t in tags})
        if not stale and all(current.get(t.key) == t.value for t in tags):
            return
        self._client.serving_endpoints.patch(existing.name, add_tags=tags, delete_tags=stale or None)

    def _grant(self, endpoint: ServingEndpointDetailed, permissions: list[PermissionSpec]) -> None:
        """Add the missing grants with the permissions PATCH, which keeps every other grant (PUT
        would replace them all, the deploying principal's own CAN_MANAGE included)."""
        missing = self._missing_grants(endpoint, permissions)
        if not missing:
            return
        log.info(
            "granting on serving endpoint %s: %s",
            endpoint.name,
            ", ".join(f"{p.permission_level} to group {p.group_name}" for p in missing),
        )
        self._client.serving_endpoints.update_permissions(
            str(endpoint.id),
            access_control_list=[
                ServingEndpointAccessControlRequest(
                    group_name=p.group_name,
                    permission_level=ServingEndpointPermissionLevel(p.permission_level),
                )
                for p in missing
            ],
        )

    def _missing_grants(
        self, endpoint: ServingEndpointDetailed, permissions: list[PermissionSpec]
    ) -> list[PermissionSpec]:
        if not permissions:
            return []
        acl = self._client.serving_endpoints.get_permissions(str(endpoint.id)).access_control_list or []
        held = {
            (entry.group_name, permission.permission_level.value)
            for entry in acl
            if entry.group_name
            for permission in entry.all_permissions or []
            if permission.permission_level is not None
        }
        return [p for p in permissions if (p.group_name, p.permission_level) not in held]


def _config_update(endpoint: ServingEndpointDetailed) -> EndpointStateConfigUpdate | None:
    return endpoint.state.config_update if endpoint.state else None


def _require_ready(endpoint: ServingEndpointDetailed) -> ServingEndpointDetailed:
    """The endpoint, or an error when it is not ready to serve."""
    state = endpoint.state
    if state is None or state.ready != EndpointStateReady.READY:
        raise EndpointDeploymentError(
            f"serving endpoint {endpoint.name} is not ready "
            f"({state.ready.value if state and state.ready else None}). "
            "See the endpoint's events and build logs in the workspace."
        )
    return endpoint


def _settled_and_ready(endpoint: ServingEndpointDetailed) -> bool:
    """Ready, with no config update in progress or failed."""
    state = endpoint.state
    return (
        state is not None
        and state.ready == EndpointStateReady.READY
        and state.config_update in (None, EndpointStateConfigUpdate.NOT_UPDATING)
    )


def _serves_entities(endpoint: ServingEndpointDetailed, request: DatabricksEndpointRequest) -> bool:
    """Whether the endpoint's current config has the requested served entities (with their
    environment variables, e.g. feature tracing) and routes."""
    current = endpoint.config
    if current is None:
        return False
    have = {_entity_key(e) for e in current.served_entities or []}
    want = {_entity_key(e) for e in request.config.served_entities or []}
    routes = current.traffic_config.routes if current.traffic_config else None
    wanted_routes = request.config.traffic_config.routes if request.config.traffic_config else None
    return have == want and {(r.served_entity_name, r.traffic_percentage) for r in routes or []} == {
        (r.served_entity_name, r.traffic_percentage) for r in wanted_routes or []
    }


def _entity_key(entity: ServedEntityOutput | ServedEntityInput) -> tuple[object, ...]:
    variables = tuple(sorted((entity.environment_vars or {}).items()))
    return (
        entity.name,
        entity.entity_name,
        entity.entity_version,
        entity.workload_size,
        bool(entity.scale_to_zero_enabled),
        variables,
    )


def _table_matches(endpoint: ServingEndpointDetailed, request: DatabricksEndpointRequest) -> bool:
    gateway = endpoint.ai_gateway
    wanted = request.ai_gateway.inference_table_config
    assert wanted is not None
    return _same_table(gateway.inference_table_config if gateway else None, wanted)


def _same_table(current: AiGatewayInferenceTableConfig | None, wanted: AiGatewayInferenceTableConfig) -> bool:
    """Both off, or both on at the same location."""
    if not (current and current.enabled):
        return not wanted.enabled
    return bool(wanted.enabled) and (
        current.catalog_name,
        current.schema_name,
        current.table_name_prefix,
    ) == (wanted.catalog_name, wanted.schema_name, wanted.table_name_prefix)
