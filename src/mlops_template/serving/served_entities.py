"""Served-entity ids and the `system.serving.served_entities` rows that name them.

On Databricks the AI-Gateway inference table logs `served_entity_id`, an opaque id of the served
entity; the system table `system.serving.served_entities` (one row per served entity and endpoint
configuration change) gives its endpoint, served entity name, entity name and version. The local
endpoint logs ids computed here from the served entity's configuration, and the local deployer
records them in a local table of the same name, so monitoring joins the same way on both platforms.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from mlops_template.serving.spec import EndpointConfig, ServedEntitySpec

SERVED_ENTITIES_TABLE = "system.serving.served_entities"
CUSTOM_MODEL = "CUSTOM_MODEL"  # `entity_type` of a Unity Catalog model version
# The columns of Databricks' table that the project reads or writes, with their documented types.
SERVED_ENTITIES_COLUMNS = (
    ("served_entity_id", "STRING"),
    ("endpoint_name", "STRING"),
    ("served_entity_name", "STRING"),
    ("entity_type", "STRING"),
    ("entity_name", "STRING"),
    ("entity_version", "STRING"),
    ("change_time", "TIMESTAMP"),
)
SERVED_ENTITIES_DDL = ", ".join(f"{name} {sql_type}" for name, sql_type in SERVED_ENTITIES_COLUMNS)


def served_entity_id(endpoint_name: str, entity: ServedEntitySpec) -> str:
    """An opaque id (32 hex digits, like Databricks'), the same for the same configuration of one
    served entity of one endpoint, and different when any of its settings changes."""
    key = json.dumps({"endpoint_name": endpoint_name, **entity.model_dump()}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def served_entity_rows(config: EndpointConfig, change_time: datetime) -> list[dict[str, object]]:
    """The `system.serving.served_entities` rows of an endpoint configuration."""
    return [
        {
            "served_entity_id": served_entity_id(config.name, entity),
            "endpoint_name": config.name,
            "served_entity_name": entity.name,
            "entity_type": CUSTOM_MODEL,
            "entity_name": entity.entity_name,
            "entity_version": entity.entity_version,
            "change_time": change_time,
        }
        for entity in config.served_entities
    ]
