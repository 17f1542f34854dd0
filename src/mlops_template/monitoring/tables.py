"""The monitoring tables of one endpoint, all named `<catalog>.<schema>.<prefix>_<suffix>`.

`<prefix>` is the AI-Gateway inference-table prefix (bundle variable `inference_table_prefix`);
`<prefix>_payload` is written by the endpoint, the others by the monitoring tasks and the
traffic simulator.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from mlops_template.platform.names import split_name

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform

_GRANULARITY = re.compile(r"^([1-9][0-9]*) (minute|hour|day)s?$")


@dataclass(frozen=True)
class MonitoringTables:
    """The payload, monitoring, ground-truth and drift-metrics tables of one inference-table prefix."""

    catalog: str
    schema: str
    prefix: str

    def __post_init__(self) -> None:
        split_name(self.payload)

    def _table(self, suffix: str) -> str:
        return f"{self.catalog}.{self.schema}.{self.prefix}_{suffix}"

    @property
    def payload(self) -> str:
        return self._table("payload")

    @property
    def monitoring(self) -> str:
        return self._table("monitoring")

    @property
    def ground_truth(self) -> str:
        return self._table("ground_truth")

    @property
    def drift_metrics(self) -> str:
        return self._table("drift_metrics")

    @property
    def rollout_metrics(self) -> str:
        return self._table("rollout_metrics")


def granularity_length(granularity: str) -> dt.timedelta:
    """The length of a window such as "1 hour" or "30 minutes" (Spark's `window()` syntax)."""
    match = _GRANULARITY.match(granularity)
    if match is None:
        raise ValueError(f"granularity '{granularity}' is not like '30 minutes', '1 hour' or '1 day'")
    count, unit = int(match.group(1)), match.group(2)
    return dt.timedelta(**{f"{unit}s": count})


def _check_granularity(value: str) -> str:
    granularity_length(value)
    return value


# A task config field holding a window length such as "1 hour".
Granularity = Annotated[str, AfterValidator(_check_granularity)]


def read_fresh(platform: Platform, name: str, *, produced_by: str) -> DataFrame:
    """Read a table others write files into, after dropping Spark's cached file listing."""
    if platform.table_exists(name):
        platform.spark.catalog.refreshTable(platform.table_name(name))
    return platform.read_table(name, produced_by=produced_by)
