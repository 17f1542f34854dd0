"""The laptop's deployer: the Databricks deployer (databricks-sdk) against the local serving host.

The host is the target's running `mlops serve` when there is one, else a server started in-process
over the same persisted endpoint state for the call (see `local_host`). Besides the SDK calls it
does only what Databricks does by itself: record the served entities in the local
`system.serving.served_entities` and register the inference table in the metastore.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops_laptop.serving.endpoint_state import load_record
from mlops_laptop.serving.inference_table import register_local_table
from mlops_laptop.serving.local_host import local_host
from mlops_template.serving.deploy import DatabricksEndpointDeployer
from mlops_template.serving.served_entities import (
    SERVED_ENTITIES_DDL,
    SERVED_ENTITIES_TABLE,
    served_entity_rows,
)
from mlops_template.serving.spec import EndpointConfig

if TYPE_CHECKING:
    from databricks.sdk.service.serving import ServingEndpointDetailed

    from mlops_laptop.platform.local import LocalPlatform

log = logging.getLogger(__name__)


class LocalEndpointDeployer:
    """`DatabricksEndpointDeployer` with a `WorkspaceClient` of the local host, per call."""

    def __init__(self, platform: LocalPlatform, *, timeout: timedelta | None = None) -> None:
        self._platform = platform
        self._timeout = timeout

    def serves(self, config: EndpointConfig) -> bool:
        with self._sdk() as sdk:
            return sdk.serves(config)

    def deploy(self, config: EndpointConfig) -> None:
        with self._sdk() as sdk:
            sdk.deploy(config)
        record_served_entities(self._platform, config)
        if config.inference_table.enabled:
            register_local_table(self._platform, config.inference_table)

    def delete(self, name: str) -> bool:
        with self._sdk() as sdk:
            return sdk.delete(name)

    def query(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        with self._sdk() as sdk:
            return sdk.query(name, records)

    @contextmanager
    def _sdk(self) -> Iterator[DatabricksEndpointDeployer]:
        self._platform.configure_mlflow()  # an in-process server loads models from this registry
        with local_host(self._platform.state_dir) as host:
            yield DatabricksEndpointDeployer(host.workspace_client(), timeout=self._timeout)


def deployed_endpoint(platform: LocalPlatform, name: str) -> ServingEndpointDetailed | None:
    """The endpoint `name` of the platform's target as persisted by its control plane (what
    `serving_endpoints.get` answers, without a server), or None when there is none."""
    record = load_record(platform.state_dir, name)
    return record.endpoint if record else None


def record_served_entities(platform: LocalPlatform, config: EndpointConfig) -> None:
    """Append `config`'s served entities not recorded yet to the local `system.serving.served_entities`
    (a change history, as on Databricks), so monitoring can name the ids the endpoint logs."""
    rows = platform.spark.createDataFrame(
        served_entity_rows(config, datetime.now(UTC)), schema=SERVED_ENTITIES_DDL
    )
    if platform.table_exists(SERVED_ENTITIES_TABLE):
        known = platform.read_table(SERVED_ENTITIES_TABLE).select("served_entity_id")
        rows = rows.join(known, on="served_entity_id", how="left_anti")
    if not rows.isEmpty():
        platform.save_table(rows, SERVED_ENTITIES_TABLE, mode="append")
