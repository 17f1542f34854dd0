"""The latest rollout analysis of a target, as a rich table with the decision it supported."""

from __future__ import annotations

import math
from typing import Any

from pyspark.sql import functions as F
from rich.console import Group
from rich.table import Table
from rich.text import Text

from mlops_template.monitoring.rollout import ERROR_METRICS
from mlops_template.platform import Platform
from mlops_template.registry.experiment import Experiment


def latest_rows(platform: Platform, table: str, produced_by: str) -> list[dict[str, Any]]:
    """The rows (one per variant) of the latest analysis in the rollout metrics table."""
    metrics = platform.read_table(table, produced_by=produced_by)
    latest = metrics.agg(F.max("computed_at")).first()[0]
    if latest is None:
        return []
    rows = metrics.where(F.col("computed_at") == F.lit(latest)).orderBy("variant", ascending=False)
    return [row.asDict() for row in rows.collect()]


def _number(value: float | None, form: str = ".4g") -> str:
    return "" if value is None or not math.isfinite(value) else format(value, form)


def _interval(row: dict[str, Any], name: str) -> str:
    estimate = _number(row[name])
    if not estimate or row[f"{name}_low"] is None:
        return estimate
    return f"{estimate} [{_number(row[f'{name}_low'])}, {_number(row[f'{name}_high'])}]"


def rollout_report(rows: list[dict[str, Any]], experiment: Experiment | None) -> Group:
    """Each variant's metrics, the challenger minus the champion, and the decision of the latest run."""
    if not rows:
        return Group(Text("No rollout analysis yet."))
    first = rows[0]
    level = f"{first['confidence']:.0%} CI"
    table = Table(
        title=(
            f"{first['model_name']}: challenger v{first['challenger_version']} vs champion "
            f"v{first['champion_version']} ({first['computed_at']:%Y-%m-%d %H:%M} UTC)"
        ),
        box=None,
        pad_edge=False,
    )
    columns = ["variant", "version", "requests", "error rate", "p50 ms", "p95 ms", "predictions", "mean"]
    for column in [*columns, "labelled", *(f"{m} ({level})" for m in ERROR_METRICS)]:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row["variant"],
            str(row["version"]),
            str(row["requests"]),
            _number(row["error_rate"], ".1%"),
            _number(row["latency_p50_ms"], ".0f"),
            _number(row["latency_p95_ms"], ".0f"),
            str(row["predictions"]),
            _number(row["prediction_mean"]),
            str(row["labelled"]),
            *(_interval(row, metric) for metric in ERROR_METRICS),
        )
    challenger = next((row for row in rows if row["variant"] == "challenger"), first)
    differences = [
        f"{metric} {_interval(challenger, f'{metric}_difference')}"
        for metric in ERROR_METRICS
        if challenger[f"{metric}_difference"] is not None
    ]
    lines = [
        table,
        Text(f"challenger minus champion ({level}): " + ("; ".join(differences) or "not enough labels")),
        Text(
            f"decision: {first['decision']} ({'applied' if first['applied'] else 'not applied'}): "
            f"{first['reason']}"
        ),
    ]
    if experiment is None:
        lines.append(Text("No experiment runs now (decided, or none started)."))
    else:
        started = experiment.started_at
        since = f"since {started:%Y-%m-%d %H:%M} UTC" if started else "not served yet"
        versions = f"challenger v{experiment.challenger} beside champion v{experiment.champion}"
        lines.append(Text(f"Running: {versions}, {since}."))
    return Group(*lines)
