"""The problem spec: everything the generic pipeline needs to know about the team's problem.

The team edits one instance, `mlops_template.problem.spec.PROBLEM`: the source table's columns,
how rows are cleaned, the entity keys, row id, event timestamp and label, the task type, the
feature tables and their point-in-time lookups, the model factory and its hyper-parameters, the
primary metric and the gate's thresholds, and which inputs to monitor. The tasks, the gate,
scoring, the registry status, monitoring, the quality monitor, the local simulator and the local
sample data read it; none of them names the problem.

`$MLOPS_PROBLEM` (`module:attribute`) points the pipeline at another spec; the test suite runs a
classification spec that way. Jobs on Databricks use the default.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd
    from databricks.feature_engineering import FeatureLookup
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_PROBLEM = "mlops_template.problem.spec:PROBLEM"
PROBLEM_VARIABLE = "MLOPS_PROBLEM"


class TaskType(StrEnum):
    REGRESSION = "regression"
    BINARY_CLASSIFICATION = "binary_classification"


# The held-out metrics of each task type (training, the gate, the registry status). A binary
# classifier's predictions are the probability of label 1; accuracy is at the spec's threshold.
METRICS: dict[TaskType, tuple[str, ...]] = {
    TaskType.REGRESSION: ("rmse", "mae", "r2"),
    TaskType.BINARY_CLASSIFICATION: ("roc_auc", "log_loss", "brier", "accuracy"),
}
HIGHER_IS_BETTER = frozenset({"r2", "roc_auc", "accuracy"})


# MLflow column types a model input may have (mlflow.types.DataType names).
InputType = Literal["double", "long", "integer", "boolean", "string", "datetime"]


@dataclass(frozen=True)
class ModelInput:
    """One column of the model's input contract (its MLflow signature)."""

    name: str
    type: InputType = "double"


@dataclass(frozen=True)
class FeatureTable:
    """A feature table computed from the prepared source rows.

    `compute(rows, start, end)` returns the feature rows with `start <= timestamp_key < end`
    (None: unbounded), keyed by `primary_keys` (which include `timestamp_key`).
    """

    name: str  # inside the pipeline's schema
    primary_keys: tuple[str, ...]
    timestamp_key: str
    description: str
    compute: Callable[[DataFrame, dt.datetime | None, dt.datetime | None], DataFrame]


@dataclass(frozen=True)
class ProblemSpec:
    """The team's problem. See the module doc; `mlops_template.problem.spec` is the example."""

    name: str
    task_type: TaskType
    # Source: its required columns (Spark simple type strings, e.g. "timestamp", "double") and
    # the cleaning that turns source rows into the prepared table; `prepare` adds `row_id`.
    source_columns: Mapping[str, str]
    prepare: Callable[[DataFrame], DataFrame]
    row_id: str
    event_timestamp: str
    entity_keys: tuple[str, ...]
    label: str  # binary classification: 0 / 1, the model predicts the probability of 1
    # Features: tables computed from the prepared rows, and the lookups, given the full name of
    # each feature table by its `name`. Lookups key on request inputs (columns of the prepared
    # rows a client sends) and name their features; their outputs are the looked-up model inputs.
    feature_tables: tuple[FeatureTable, ...]
    feature_lookups: Callable[[Mapping[str, str]], list[FeatureLookup]]
    # Model: its input contract (the request inputs, then the looked-up features), hyper-parameters
    # (a pydantic model whose defaults are the problem's) and the factory of an unfitted
    # scikit-learn estimator taking exactly those inputs.
    model_inputs: tuple[ModelInput, ...]
    model_params: type[BaseModel]
    build_model: Callable[[Any], Any]
    # Types skops must trust to load the fitted estimator (see training.tracking), and the pip
    # packages loading it needs beyond mlflow, scikit-learn, skops, pandas and numpy.
    trusted_types: tuple[str, ...] = ()
    model_packages: tuple[str, ...] = ()
    # Evaluation: the metric the gate compares champion and challenger on, and absolute floors
    # named `min_<metric>` / `max_<metric>` over the task type's metrics.
    primary_metric: str = "rmse"
    gate_thresholds: Mapping[str, float] = field(default_factory=dict)
    classification_threshold: float = 0.5  # binary: probability from which the label is 1
    # Tables of the pipeline's schema written by the generic tasks.
    prepared_table: str = "source_clean"
    predictions_table: str = "predictions"
    # Monitoring: inputs compared with the baseline for drift (default: every model input but
    # timestamps), and
    # the default quality limits on labelled served rows per window, named like the gate's
    # (`max_rmse`, `min_roc_auc`, ...); the job's `quality_max_<metric>` thresholds override them.
    monitored_inputs: tuple[str, ...] = ()
    quality_thresholds: Mapping[str, float] = field(default_factory=dict)
    # The laptop platform: sample source rows (spark, rows, seed), generated on the first read of
    # `sample_table` (the three-level name of the source table they stand in for, e.g. a
    # Databricks sample), and how simulated drifted traffic changes model inputs.
    sample_source: Callable[[SparkSession, int, int], DataFrame] | None = None
    sample_table: str | None = None
    drift_inputs: Callable[[pd.DataFrame], pd.DataFrame] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_type", TaskType(self.task_type))
        problems = []
        if self.primary_metric not in self.metric_names:
            problems.append(f"primary_metric {self.primary_metric!r} is not one of {self.metric_names}")
        allowed = self.threshold_names
        problems += [
            f"gate threshold {name!r} is not one of {allowed}"
            for name in self.gate_thresholds
            if name not in allowed
        ]
        problems += [
            f"quality threshold {name!r} is not one of {allowed}"
            for name in self.quality_thresholds
            if name not in allowed
        ]
        if unknown := [name for name in self.monitored_inputs if name not in self.input_names]:
            problems.append(f"monitored_inputs {unknown} are not model inputs {self.input_names}")
        times = [
            i.name for i in self.model_inputs if i.type == "datetime" and i.name in self.monitored_inputs
        ]
        if times:
            problems.append(
                f"monitored_inputs {times} are timestamps: absolute times always drift; monitor what the "
                "model derives from them instead"
            )
        if not 0 < self.classification_threshold < 1:
            problems.append(f"classification_threshold {self.classification_threshold} is not in (0, 1)")
        if self.sample_table is not None and self.sample_source is None:
            problems.append(f"sample_table {self.sample_table!r} needs a sample_source to generate it")
        if len(set(self.input_names)) != len(self.input_names):
            problems.append(f"model_inputs repeat a name: {self.input_names}")
        problems += self._lookup_problems()
        if problems:
            raise ProblemSpecError(f"problem spec {self.name!r}: {'; '.join(problems)}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRICS[self.task_type]

    @property
    def threshold_names(self) -> tuple[str, ...]:
        """The gate and monitoring quality thresholds this task type allows: `min_/max_<metric>`."""
        return tuple(f"{bound}_{metric}" for metric in self.metric_names for bound in ("min", "max"))

    @property
    def is_classifier(self) -> bool:
        return self.task_type == TaskType.BINARY_CLASSIFICATION

    @property
    def input_names(self) -> list[str]:
        return [model_input.name for model_input in self.model_inputs]

    @property
    def looked_up_inputs(self) -> list[str]:
        """The model inputs the feature lookups produce (a client may send them to override)."""
        lookups = self.feature_lookups({table.name: table.name for table in self.feature_tables})
        return [lookup._get_output_name(name) for lookup in lookups for name in lookup.feature_names or ()]

    @property
    def request_inputs(self) -> tuple[ModelInput, ...]:
        """The model inputs a client sends: every model input the lookups do not produce."""
        looked_up = set(self.looked_up_inputs)
        return tuple(model_input for model_input in self.model_inputs if model_input.name not in looked_up)

    @property
    def request_input_names(self) -> list[str]:
        return [model_input.name for model_input in self.request_inputs]

    @property
    def drift_columns(self) -> list[str]:
        """The monitored inputs, by default every model input that is not a timestamp."""
        return list(self.monitored_inputs) or [i.name for i in self.model_inputs if i.type != "datetime"]

    def _lookup_problems(self) -> list[str]:
        """Lookups name their features, output model inputs and key on request inputs."""
        lookups = self.feature_lookups({table.name: table.name for table in self.feature_tables})
        if unnamed := [lookup.table_name for lookup in lookups if not lookup.feature_names]:
            return [f"the lookups of {unnamed} must list feature_names (the model's inputs)"]
        problems = []
        outputs = self.looked_up_inputs
        if unknown := [name for name in outputs if name not in self.input_names]:
            problems.append(f"looked-up features {unknown} are not model_inputs {self.input_names}")
        requested = set(self.input_names) - set(outputs)
        for lookup in lookups:
            keys = [lookup.lookup_key] if isinstance(lookup.lookup_key, str) else list(lookup.lookup_key)
            keys += [lookup.timestamp_lookup_key] if lookup.timestamp_lookup_key else []
            if missing := [key for key in keys if key not in requested]:
                problems.append(
                    f"the lookup of {lookup.table_name} keys on {missing}, which are not request inputs "
                    "(model inputs a client sends)"
                )
        return problems

    def table(self, schema: str, name: str) -> str:
        """The full name of a pipeline table, `schema` being `catalog.schema`."""
        return f"{schema}.{name}"

    def prepared_table_name(self, schema: str) -> str:
        return self.table(schema, self.prepared_table)

    def predictions_table_name(self, schema: str) -> str:
        return self.table(schema, self.predictions_table)

    def feature_table_names(self, schema: str) -> dict[str, str]:
        """Full name of every feature table, keyed by its `name`."""
        return {table.name: self.table(schema, table.name) for table in self.feature_tables}


class ProblemSpecError(ValueError):
    """A problem spec is inconsistent, or `$MLOPS_PROBLEM` does not name one."""


@cache
def _load(reference: str) -> ProblemSpec:
    module_name, _, attribute = reference.partition(":")
    try:
        spec = getattr(importlib.import_module(module_name), attribute or "PROBLEM")
    except (ImportError, AttributeError) as error:
        raise ProblemSpecError(
            f"cannot load the problem spec {reference!r} ({error}): set ${PROBLEM_VARIABLE} to "
            "'package.module:ATTRIBUTE' naming a ProblemSpec, or unset it for the default"
        ) from None
    if not isinstance(spec, ProblemSpec):
        raise ProblemSpecError(f"{reference} is a {type(spec).__name__}, not a ProblemSpec")
    return spec


def load_problem(reference: str | None = None) -> ProblemSpec:
    """The problem spec: `reference`, else `$MLOPS_PROBLEM`, else the template's default."""
    return _load(reference or os.environ.get(PROBLEM_VARIABLE) or DEFAULT_PROBLEM)
