"""Task `prepare_data`: read the source table, check its columns, write the prepared table.

The problem spec says which columns the source must have and how its rows are cleaned (its
`prepare` also adds the row id); the prepared table is `<schema>.<spec.prepared_table>`.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame

from mlops_template.platform import Platform
from mlops_template.problem_spec import ProblemSpec, load_problem
from mlops_template.tasks.common import PipelineTaskConfig, task_entry_point

log = logging.getLogger(__name__)


class SourceSchemaError(ValueError):
    """The source table lacks a column the problem needs or has it with another type."""


class PrepareDataConfig(PipelineTaskConfig):
    source_table: str


def check_source_columns(df: DataFrame, table: str, spec: ProblemSpec) -> None:
    """Fail naming every missing or mistyped column of the spec's source columns."""
    actual = {field.name: field.dataType.simpleString() for field in df.schema}
    problems = [
        f"{name} missing" if name not in actual else f"{name} is {actual[name]}, expected {expected}"
        for name, expected in spec.source_columns.items()
        if actual.get(name) != expected
    ]
    if problems:
        raise SourceSchemaError(
            f"source table {table} lacks columns of problem {spec.name}: {'; '.join(problems)}. "
            "Point the `source_table` bundle variable at a table with these columns, or change "
            "the problem spec's source_columns."
        )


def run(platform: Platform, config: PrepareDataConfig) -> None:
    spec = load_problem()
    source = platform.read_table(config.source_table)
    check_source_columns(source, config.source_table, spec)
    output = spec.prepared_table_name(config.schema_)
    platform.save_table(spec.prepare(source), output)
    kept = platform.read_table(output).count()
    log.info("kept %d rows in %s", kept, output)


main = task_entry_point(PrepareDataConfig, run)
