"""Deploy an `EndpointConfig`: the deployer protocol and Model Serving through the databricks-sdk.

The platform picks the implementation (`platform.endpoint_deployer()`); the local one lives in
`local_deploy.py` so this module never imports the local server (starlette / uvicorn).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Protocol

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound
from databricks.sdk.service.serving import (
    AiGatewayInferenceTableConfig,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    EndpointTag,
    ServingEndpointDetailed,
)

from mlops_template.serving.spec import EndpointConfig, build_endpoint_config

log = logging.getLogger(__name__)

MANAGED_TAGS = frozenset({"model_name", "model_version", "challenger_version", "ab_model_version", "git_sha"})
_FAILED_UPDATES = (EndpointStateConfigUpdate.UPDATE_FAILED, EndpointStateConfigUpdate.UPDATE_CANCELED)


class EndpointDeploymentError(RuntimeError):
    """The endpoint did not become ready with the new config, or its check failed."""


class EndpointDeployer(Protocol):
    """Creates or updates a serving endpoint from its spec and waits until it serves it."""

    def deploy(self, config: EndpointConfig) -> None: ...

    def query(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Send `records` (`dataframe_records`) to the endpoint; its JSON answer."""
        ...


class DatabricksEndpointDeployer:
    """Model Serving through the SDK: create or update, wait until ready, inference table, tags."""

    def __init__(
        self,
        client: WorkspaceClient | None = None,
        *,
        timeout: timedelta = timedelta(minutes=30),
        poll_seconds: float = 15.0,
    ) -> None:
        self._client = client or WorkspaceClient()
        self.timeout = timeout
        self.poll_seconds = poll_seconds

    def deploy(self, config: EndpointConfig) -> None:
        request = build_endpoint_config(config)
        endpoints = self._client.serving_endpoints
        existing = self._existing(config.name)
        if existing is None:
            log.info("creating serving endpoint %s", config.name)
            endpoints.create(
                name=config.name,
                config=request.config,
                ai_gateway=request.ai_gateway if config.inference_table.enabled else None,
                tags=request.tags,
            )
        else:
            log.info("updating serving endpoint %s", config.name)
            endpoints.update_config(
                name=config.name,
                served_entities=request.config.served_entities,
                traffic_config=request.config.traffic_config,
            )
        self._wait_until_ready(config.name)
        if existing is not None:
            assert request.ai_gateway.inference_table_config is not None
            self._update_inference_table(existing, request.ai_gateway.inference_table_config)
            self._update_tags(existing, request.tags)
        log.info("serving endpoint %s is ready: %s", config.name, [e.name for e in config.served_entities])

    def query(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        return self._client.serving_endpoints.query(name=name, dataframe_records=records).as_dict()

    def _existing(self, name: str) -> ServingEndpointDetailed | None:
        try:
            return self._client.serving_endpoints.get(name)
        except NotFound:
            return None

    def _wait_until_ready(self, name: str) -> None:
        """Poll until the new config serves; Databricks serves the previous one until then."""
        deadline = time.monotonic() + self.timeout.total_seconds()
        while True:
            state = self._client.serving_endpoints.get(name).state
            ready = state.ready if state else None
            update = state.config_update if state else None
            if update in _FAILED_UPDATES:
                raise EndpointDeploymentError(
                    f"serving endpoint {name}: the config update ended {update.value}; the endpoint keeps "
                    "serving its previous config. See the endpoint's events and build logs in the workspace."
                )
            if ready == EndpointStateReady.READY and update in (None, EndpointStateConfigUpdate.NOT_UPDATING):
                return
            if time.monotonic() >= deadline:
                raise EndpointDeploymentError(
                    f"serving endpoint {name} was not ready after {self.timeout} (ready: "
                    f"{ready.value if ready else None}, config update: {update.value if update else None}); "
                    "until the new config is ready Databricks keeps serving the previous one. "
                    "See the endpoint's events and build logs in the workspace."
                )
            time.sleep(self.poll_seconds)

    def _update_inference_table(
        self, existing: ServingEndpointDetailed, wanted: AiGatewayInferenceTableConfig
    ) -> None:
        """Enable, move or disable the AI-Gateway inference table, keeping other gateway settings."""
        gateway = existing.ai_gateway
        current = gateway.inference_table_config if gateway else None
        if not wanted.enabled and not (current and current.enabled):
            return  # never call the gateway API when tables stay off (it may be unavailable)
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
        stale = sorted({t.key for t in existing.tags or [] if t.key in MANAGED_TAGS} - {t.key for t in tags})
        self._client.serving_endpoints.patch(existing.name, add_tags=tags, delete_tags=stale or None)
