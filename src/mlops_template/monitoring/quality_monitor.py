"""The Databricks quality monitor (Lakehouse Monitoring, InferenceLog profile) of the monitoring table.

The monitor needs its table, which the monitoring job's `unpack` task creates once the endpoint
has traffic, so it is not a bundle resource (the first `bundle deploy` would fail on an empty
workspace) but created or updated by the job's `quality_monitor` task, after `unpack`.
On Databricks: `WorkspaceClient().quality_monitors`; elsewhere what the platform's package
registers (the laptop platform checks the request as Databricks does and records it).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound
from databricks.sdk.service.catalog import (
    MonitorCronSchedule,
    MonitorInferenceLog,
    MonitorInferenceLogProblemType,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_template.platform import DatabricksPlatform, MissingTableError, Platform, registered_for
from mlops_template.platform.names import split_name

log = logging.getLogger(__name__)

QUALITY_MONITORS_ENTRY_POINTS = "mlops_template.quality_monitors"
# The granularities Lakehouse Monitoring accepts
# (https://docs.databricks.com/lakehouse-monitoring/create-monitor-api.html).
GRANULARITIES = (
    "5 minutes",
    "30 minutes",
    "1 hour",
    "1 day",
    "1 week",
    "2 weeks",
    "3 weeks",
    "4 weeks",
    "1 month",
    "1 year",
)
# Spark types a timestamp column may have: TIMESTAMP, or what `to_timestamp` converts.
TIMESTAMP_TYPES = ("timestamp", "timestamp_ntz", "date", "string")

ProblemType = Literal["PROBLEM_TYPE_REGRESSION", "PROBLEM_TYPE_CLASSIFICATION"]


class QualityMonitorError(ValueError):
    """Databricks would refuse this monitor: the message says what is wrong."""


class InferenceLogSpec(BaseModel):
    """The InferenceLog profile: which columns hold time, model id, prediction and label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem_type: ProblemType
    timestamp_col: str = Field(min_length=1)
    model_id_col: str = Field(min_length=1)
    prediction_col: str = Field(min_length=1)
    label_col: str | None = None
    granularities: list[str] = Field(min_length=1)

    @field_validator("granularities")
    @classmethod
    def _known_granularities(cls, values: list[str]) -> list[str]:
        if unknown := [value for value in values if value not in GRANULARITIES]:
            raise ValueError(f"unknown granularities {unknown}: choose from {list(GRANULARITIES)}")
        return values


class QualityMonitorSpec(BaseModel):
    """One monitor: its table, where its metric tables and dashboard go, its profile and schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table_name: str
    output_schema_name: str
    assets_dir: str = Field(pattern=r"^/")
    inference_log: InferenceLogSpec
    slicing_exprs: list[str] = Field(default_factory=list)
    schedule_cron: str = ""  # a quartz cron expression; empty: refreshed only on demand
    schedule_timezone: str = "UTC"

    @field_validator("table_name")
    @classmethod
    def _three_level(cls, value: str) -> str:
        split_name(value)
        return value

    @field_validator("output_schema_name")
    @classmethod
    def _two_level(cls, value: str) -> str:
        if len(value.split(".")) != 2 or not all(value.split(".")):
            raise ValueError(f"the output schema must be 'catalog.schema', got {value!r}")
        return value

    def columns(self) -> list[str]:
        """The table columns the profile names."""
        profile = self.inference_log
        named = [profile.timestamp_col, profile.model_id_col, profile.prediction_col, profile.label_col]
        return [column for column in named if column]

    def request(self) -> dict[str, Any]:
        """The arguments of `quality_monitors.create` / `update`, as the SDK's dataclasses."""
        profile = self.inference_log
        return {
            "output_schema_name": self.output_schema_name,
            "inference_log": MonitorInferenceLog(
                problem_type=MonitorInferenceLogProblemType(profile.problem_type),
                timestamp_col=profile.timestamp_col,
                granularities=list(profile.granularities),
                prediction_col=profile.prediction_col,
                model_id_col=profile.model_id_col,
                label_col=profile.label_col,
            ),
            "slicing_exprs": list(self.slicing_exprs) or None,
            "schedule": MonitorCronSchedule(
                quartz_cron_expression=self.schedule_cron, timezone_id=self.schedule_timezone
            )
            if self.schedule_cron
            else None,
        }

    def request_body(self) -> dict[str, Any]:
        """The JSON body the SDK sends to create the monitor."""
        body: dict[str, Any] = {"assets_dir": self.assets_dir}
        for key, value in self.request().items():
            if value is not None:
                body[key] = value.as_dict() if hasattr(value, "as_dict") else value
        return body


class QualityMonitors(Protocol):
    """Creates, updates and deletes table quality monitors."""

    def apply(self, spec: QualityMonitorSpec) -> str:
        """Create the monitor, or update it when it differs: 'created', 'updated' or 'unchanged'."""
        ...

    def delete(self, table_name: str) -> bool:
        """Delete the table's monitor (not its metric tables or dashboard); False when none."""
        ...


def quality_monitors(platform: Platform) -> QualityMonitors:
    """Lakehouse Monitoring on Databricks, else the monitors the platform's package registers under
    `QUALITY_MONITORS_ENTRY_POINTS`, called with the platform."""
    if isinstance(platform, DatabricksPlatform):
        return DatabricksQualityMonitors()
    return registered_for(platform, QUALITY_MONITORS_ENTRY_POINTS)(platform)


def monitor_settings_differ(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the settable fields of a monitor differ (`assets_dir` cannot be updated)."""
    keys = ("output_schema_name", "inference_log", "slicing_exprs", "schedule")

    def comparable(body: dict[str, Any]) -> dict[str, Any]:
        values = {key: body.get(key) for key in keys}
        if values["schedule"]:
            values["schedule"] = {k: v for k, v in values["schedule"].items() if k != "pause_status"}
        return values

    return comparable(current) != comparable(wanted)


class DatabricksQualityMonitors:
    """Lakehouse Monitoring through the SDK's `quality_monitors` API."""

    def __init__(self, client: WorkspaceClient | None = None) -> None:
        self._client = client or WorkspaceClient()

    def apply(self, spec: QualityMonitorSpec) -> str:
        monitors = self._client.quality_monitors
        try:
            current = monitors.get(spec.table_name)
        except NotFound:
            current = None
        if current is None:
            try:
                monitors.create(spec.table_name, assets_dir=spec.assets_dir, **spec.request())
            except NotFound as error:
                raise MissingTableError(
                    f"cannot monitor {spec.table_name}: {error}. The monitoring job's unpack task "
                    "creates it from the endpoint's inference table."
                ) from None
            return "created"
        if not monitor_settings_differ(current.as_dict(), spec.request_body()):
            return "unchanged"
        monitors.update(spec.table_name, **spec.request())
        return "updated"

    def delete(self, table_name: str) -> bool:
        try:
            self._client.quality_monitors.delete(table_name)
        except NotFound:
            return False
        return True
