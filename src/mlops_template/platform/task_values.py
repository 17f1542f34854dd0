"""Task values: small JSON values a notebook task publishes for later tasks of the same job run.

Databricks lets only Python notebooks set them (`dbutils.jobs.taskValues.set`,
https://docs.databricks.com/jobs/task-values.html): the tasks that set one are thin notebooks
under notebooks/tasks/, and every other decision comes from durable state (tables, aliases).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

MAX_TASK_VALUE_BYTES = 48 * 1024  # the Databricks limit on one task value's JSON
TASK_VALUES_DOC = "https://docs.databricks.com/jobs/task-values.html"
NOTEBOOK_TASK = "notebook_task"


class TaskValuesUnavailableError(RuntimeError):
    """Task values cannot be set or read here (Databricks allows them only in Python notebooks)."""


class TaskValues(Protocol):
    """Set and read task values (`dbutils.jobs.taskValues` on Databricks)."""

    def set(self, key: str, value: Any) -> None: ...

    def get(self, task_key: str, key: str, default: Any = None) -> Any: ...


def check_task_value(key: str, value: Any) -> str:
    """Return the value's JSON, or fail if Databricks would refuse it."""
    try:
        encoded = json.dumps(value)
    except TypeError as error:
        raise ValueError(f"task value '{key}' is not JSON-serializable: {error}") from error
    if len(encoded.encode()) > MAX_TASK_VALUE_BYTES:
        raise ValueError(f"task value '{key}' is larger than {MAX_TASK_VALUE_BYTES} bytes as JSON")
    return encoded


class LocalTaskValues:
    """The local runner's store: values per task key, set by the task the runner is running.

    The runner runs each task inside `running(task_key, task_type)`; only a `notebook_task` may
    set values there, as on Databricks. (`task_type` None: a test drives a task itself.)
    """

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self.current_task: str | None = None
        self.current_task_type: str | None = None

    @contextmanager
    def running(self, task_key: str, task_type: str) -> Iterator[None]:
        """Run task `task_key` of type `task_type` (values of an earlier run of it are dropped)."""
        self._values.pop(task_key, None)
        self.current_task, self.current_task_type = task_key, task_type
        try:
            yield
        finally:
            self.current_task, self.current_task_type = None, None

    def set(self, key: str, value: Any) -> None:
        if self.current_task is None:
            raise TaskValuesUnavailableError(
                f"task value '{key}' set outside a job task: run the task with `mlops run`"
            )
        if self.current_task_type not in (None, NOTEBOOK_TASK):
            raise TaskValuesUnavailableError(
                f"task {self.current_task} is a {self.current_task_type} and sets task value '{key}', "
                f"but Databricks lets only Python notebook tasks set task values ({TASK_VALUES_DOC}): "
                "make it a notebook task (see notebooks/tasks/) or keep the value in a table or an alias"
            )
        self._values.setdefault(self.current_task, {})[key] = json.loads(check_task_value(key, value))

    def get(self, task_key: str, key: str, default: Any = None) -> Any:
        return self._values.get(task_key, {}).get(key, default)

    def of_task(self, task_key: str) -> dict[str, Any]:
        """All values a task set (empty if none)."""
        return dict(self._values.get(task_key, {}))


class DatabricksTaskValues:
    """`dbutils.jobs.taskValues` of the notebook task this process runs; an error anywhere else."""

    def set(self, key: str, value: Any) -> None:
        check_task_value(key, value)
        notebook_dbutils().jobs.taskValues.set(key=key, value=value)

    def get(self, task_key: str, key: str, default: Any = None) -> Any:
        return notebook_dbutils().jobs.taskValues.get(taskKey=task_key, key=key, default=default)


def notebook_dbutils() -> Any:
    """The Databricks Runtime's `dbutils`, or a clear error when this is not a Databricks notebook.

    Outside a notebook `databricks.sdk.runtime` offers a stand-in whose `taskValues.set` does
    nothing (`databricks/sdk/dbutils.py`, `_JobsUtil._TaskValuesUtil`), and without workspace
    credentials importing it fails: neither may pass for setting a value.
    """
    problem = (
        "task values need the dbutils of a Databricks Python notebook task, and this process is not one "
        f"({TASK_VALUES_DOC})"
    )
    try:
        from databricks.sdk import runtime
    except ValueError as error:  # no workspace credentials: the stand-in cannot even be created
        raise TaskValuesUnavailableError(f"{problem}: {error}") from None
    if runtime.is_local_implementation:
        raise TaskValuesUnavailableError(
            f"{problem}: databricks.sdk.runtime only offers its stand-in, which ignores taskValues.set"
        )
    return runtime.dbutils
