"""The prepared rows joined with their point-in-time features: the training set and the rows to score.

The rows keep the request inputs (what a client sends: keys, times, raw values) and the label; the
feature lookups add the looked-up inputs as of each row's lookup time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform
    from mlops_template.platform.feature_store import TrainingSet
    from mlops_template.problem_spec import ProblemSpec


def feature_training_set(
    platform: Platform, spec: ProblemSpec, rows: DataFrame, schema: str, *, with_row_id: bool = True
) -> TrainingSet:
    """The feature store's training set over `rows`: the row id (unless `with_row_id` is False: the
    set a model is logged with, whose source columns are what a request sends), the request inputs,
    the label, and the features of the feature tables of `schema` (`catalog.schema`)."""
    ids = [spec.row_id] if with_row_id else []
    return platform.feature_store.create_training_set(
        rows.select(*ids, *spec.request_input_names, spec.label),
        spec.feature_lookups(spec.feature_table_names(schema)),
        label=spec.label,
    )


def build_training_set(platform: Platform, spec: ProblemSpec, rows: DataFrame, schema: str) -> DataFrame:
    """Prepared rows with their row id, request inputs, point-in-time features and the label (last)."""
    return feature_training_set(platform, spec, rows, schema).load_df()


def build_feature_set(platform: Platform, spec: ProblemSpec, rows: DataFrame, schema: str) -> DataFrame:
    """The same rows for scoring: every column of `rows` kept, no label needed."""
    training_set = platform.feature_store.create_training_set(
        rows, spec.feature_lookups(spec.feature_table_names(schema)), label=None
    )
    return training_set.load_df()
