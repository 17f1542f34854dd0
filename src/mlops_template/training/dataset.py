"""The prepared rows joined with their point-in-time features: the training set and the rows to score."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform
    from mlops_template.problem_spec import ProblemSpec


def _with_features(
    platform: Platform, spec: ProblemSpec, rows: DataFrame, schema: str, label: str | None
) -> DataFrame:
    training_set = platform.feature_store.create_training_set(
        spec.add_lookup_inputs(rows),
        spec.feature_lookups(spec.feature_table_names(schema)),
        label=label,
        exclude_columns=list(spec.lookup_helper_columns),
    )
    return training_set.load_df()


def build_training_set(platform: Platform, spec: ProblemSpec, rows: DataFrame, schema: str) -> DataFrame:
    """Prepared rows with their inputs, point-in-time features (the feature tables of `schema`,
    `catalog.schema`) and the label (last); the lookups' helper columns dropped."""
    return _with_features(platform, spec, rows, schema, label=spec.label)


def build_feature_set(platform: Platform, spec: ProblemSpec, rows: DataFrame, schema: str) -> DataFrame:
    """The same rows for scoring: no label needed, input columns keep their order."""
    return _with_features(platform, spec, rows, schema, label=None)
