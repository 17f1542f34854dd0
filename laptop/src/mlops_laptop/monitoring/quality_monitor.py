"""The laptop platform's quality monitors: each request checked as Databricks checks it (table,
columns, output schema) and recorded under `<state>/quality_monitors/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from databricks.sdk.service.catalog import MonitorInfo

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.monitoring.quality_monitor import (
    TIMESTAMP_TYPES,
    QualityMonitorError,
    QualityMonitorSpec,
    monitor_settings_differ,
)
from mlops_template.platform import MissingTableError
from mlops_template.platform.names import local_database, split_name

MONITORS_DIR = "quality_monitors"


class LocalQualityMonitors:
    """Checks a monitor as Databricks would and records it under `<state>/quality_monitors/`."""

    def __init__(self, platform: LocalPlatform) -> None:
        self._platform = platform

    def apply(self, spec: QualityMonitorSpec) -> str:
        self._check(spec)
        path = self._path(spec.table_name)
        body = spec.request_body()
        MonitorInfo.from_dict(body | {"table_name": spec.table_name})  # the SDK reads it back
        current = json.loads(path.read_text()) if path.is_file() else None
        if current is not None and not monitor_settings_differ(current, body):
            return "unchanged"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body if current is None else current | body, indent=2))
        return "created" if current is None else "updated"

    def delete(self, table_name: str) -> bool:
        path = self._path(table_name)
        if not path.is_file():
            return False
        path.unlink()
        return True

    def recorded(self, table_name: str) -> dict[str, Any] | None:
        """The recorded create request of the table's monitor, or None."""
        path = self._path(table_name)
        return json.loads(path.read_text()) if path.is_file() else None

    def _path(self, table_name: str) -> Path:
        return self._platform.state_dir / MONITORS_DIR / f"{'.'.join(split_name(table_name))}.json"

    def _check(self, spec: QualityMonitorSpec) -> None:
        """What Databricks refuses: a missing table or output schema, missing or mistyped columns."""
        platform = self._platform
        if not platform.table_exists(spec.table_name):
            raise MissingTableError(
                f"cannot monitor {spec.table_name}: the table does not exist. The monitoring job's "
                "unpack task creates it from the endpoint's inference table."
            )
        catalog, schema = spec.output_schema_name.split(".")
        if not platform.spark.catalog.databaseExists(local_database(catalog, schema)):
            raise QualityMonitorError(f"the output schema {spec.output_schema_name} does not exist")
        types = {
            field.name: field.dataType.simpleString()
            for field in platform.spark.table(platform.table_name(spec.table_name)).schema.fields
        }
        if missing := [column for column in spec.columns() if column not in types]:
            raise QualityMonitorError(
                f"table {spec.table_name} has no column {missing} named by the monitor "
                f"(columns: {sorted(types)})"
            )
        timestamp = spec.inference_log.timestamp_col
        if types[timestamp] not in TIMESTAMP_TYPES:
            raise QualityMonitorError(
                f"the monitor's timestamp column {timestamp} of {spec.table_name} is {types[timestamp]}: "
                "it must be a TIMESTAMP or convertible with to_timestamp"
            )
