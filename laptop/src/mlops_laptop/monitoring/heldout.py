"""Held-out rows for simulated traffic: new source rows with every model input built as for training.

The rows come from the problem spec's `sample_source` with another seed than the pipeline's
source, over the same period, prepared with the spec's `prepare`. Their feature tables are
computed from these rows with the spec's own `compute` functions and looked up as of each row with
the spec's feature lookups (the local feature store's point-in-time join, defaults included), so
clean traffic follows the training distribution: the population must have as many rows as the
pipeline's source for aggregates over entities to compare. The simulator sends these looked-up
values with the request inputs: a replay of a past period must not depend on the online store's
latest rows (sent values override the endpoint's lookup). Everything here is plain Spark over
DataFrames: no table, no metastore.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from mlops_laptop.platform.local_feature_store import FeatureTable, point_in_time_join
from mlops_template.problem_spec import ProblemSpec
from mlops_template.training.model import input_columns

HELDOUT_SEED = 7  # the pipeline's sample source is generated with seed 42


def held_out_rows(spark: SparkSession, spec: ProblemSpec, rows: int, seed: int = HELDOUT_SEED) -> DataFrame:
    """About `rows` new prepared rows: the row id, the model inputs (signature types), the label."""
    if spec.sample_source is None:
        raise ValueError(
            f"problem spec {spec.name!r} has no sample_source: give it one (spark, rows, seed -> source "
            "rows) to simulate traffic locally"
        )
    prepared = spec.prepare(spec.sample_source(spark, rows, seed))
    tables = {
        table.name: (
            FeatureTable(table.name, table.primary_keys, table.timestamp_key),
            table.compute(prepared, None, None),
        )
        for table in spec.feature_tables
    }
    lookups = spec.feature_lookups({name: name for name in tables})
    with_features = point_in_time_join(prepared, lookups, tables, spec.label)
    return with_features.select(spec.row_id, *input_columns(spec), spec.label)
