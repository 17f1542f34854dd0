"""Ground truth: the actual label of each served row, keyed by the problem's row id.

On Databricks the ground-truth table is whatever holds the labels with the row id (e.g. the
prepared rows of later days, once their outcome is known); on the laptop the traffic simulator
writes it. The row id is read as a string, as the monitoring table keeps it, and the label as a
double (a binary label as 0.0 / 1.0).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from mlops_template.monitoring.tables import read_fresh
from mlops_template.platform.base import MissingTableError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform
    from mlops_template.problem_spec import ProblemSpec

log = logging.getLogger(__name__)

GROUND_TRUTH_PRODUCER = "the job or process that records the actual labels (locally: mlops simulate-traffic)"


def read_labels(platform: Platform, table: str, spec: ProblemSpec) -> DataFrame | None:
    """One label per row id from `table`, or None when there is no such table (yet)."""
    if not table:
        return None
    try:
        rows = read_fresh(platform, table, produced_by=GROUND_TRUTH_PRODUCER)
    except MissingTableError:
        log.info("no ground truth table %s: predictions stay unlabeled", table)
        return None
    if missing := [name for name in (spec.row_id, spec.label) if name not in rows.columns]:
        raise ValueError(
            f"the ground truth table {table} has no column {missing}: it must hold the row id "
            f"{spec.row_id!r} and the label {spec.label!r} of the problem spec {spec.name!r}"
        )
    row_id, label = F.col(spec.row_id).cast("string"), F.col(spec.label).cast("double")
    return (
        rows.where(row_id.isNotNull() & label.isNotNull())
        .groupBy(row_id.alias(spec.row_id))
        .agg(F.max(label).alias(spec.label))  # a row has one label
    )
