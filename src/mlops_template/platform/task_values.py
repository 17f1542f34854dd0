"""Task values: small JSON values a task publishes for later tasks of the same job run."""

from __future__ import annotations

import json
from typing import Any, Protocol

MAX_TASK_VALUE_BYTES = 48 * 1024  # the Databricks limit on one task value's JSON


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
    """The local runner's store: values per task key, for the task the runner is running."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self.current_task: str | None = None

    def set(self, key: str, value: Any) -> None:
        if self.current_task is None:
            raise RuntimeError(f"task value '{key}' set outside a job task: run the task with `mlops run`")
        self._values.setdefault(self.current_task, {})[key] = json.loads(check_task_value(key, value))

    def get(self, task_key: str, key: str, default: Any = None) -> Any:
        return self._values.get(task_key, {}).get(key, default)

    def of_task(self, task_key: str) -> dict[str, Any]:
        """All values a task set (empty if none)."""
        return dict(self._values.get(task_key, {}))


class DatabricksTaskValues:
    """`dbutils.jobs.taskValues` of the job run this process belongs to."""

    def set(self, key: str, value: Any) -> None:
        check_task_value(key, value)
        _dbutils().jobs.taskValues.set(key=key, value=value)

    def get(self, task_key: str, key: str, default: Any = None) -> Any:
        return _dbutils().jobs.taskValues.get(taskKey=task_key, key=key, default=default, debugValue=default)


def _dbutils() -> Any:
    from databricks.sdk.runtime import dbutils

    return dbutils
