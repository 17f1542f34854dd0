"""The `dbutils` the local runner gives a notebook task: `widgets` and `jobs.taskValues`.

As in a Databricks job run: a widget's value is the parameter the task received (its
`base_parameters`, overridden by the job's parameters, https://docs.databricks.com/jobs/job-parameters.html),
else the default the notebook declared; `dbutils.widgets.get` of a parameter the notebook never
declared works; task values go to the runner's store. Anything else of `dbutils` is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlops_template.platform.task_values import LocalTaskValues


class WidgetNotDefinedError(LookupError):
    """`dbutils.widgets.get` of a name that is neither a parameter nor a declared widget."""


class LocalWidgets:
    """`dbutils.widgets` over the parameters the task received."""

    def __init__(self, parameters: Mapping[str, str]) -> None:
        self._parameters = dict(parameters)
        self._defaults: dict[str, str] = {}

    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:
        """Declare a text widget (its value: the task's parameter `name`, else `defaultValue`)."""
        self._defaults[name] = str(defaultValue)

    def dropdown(
        self,
        name: str,
        defaultValue: str,
        choices: Sequence[str],
        label: str | None = None,
    ) -> None:
        """Declare a dropdown widget; its default and the value it receives must be among `choices`."""
        allowed = [str(choice) for choice in choices]
        value = self._parameters.get(name, str(defaultValue))
        if str(defaultValue) not in allowed or value not in allowed:
            raise ValueError(f"dropdown widget '{name}': value '{value}' is not one of the choices {allowed}")
        self._defaults[name] = str(defaultValue)

    def get(self, name: str) -> str:
        if name in self._parameters:
            return self._parameters[name]
        if name in self._defaults:
            return self._defaults[name]
        raise WidgetNotDefinedError(
            f"no input widget named '{name}' is defined and the task received no parameter '{name}': "
            "declare it with dbutils.widgets.text or pass it in the task's base_parameters"
        )


class LocalJobTaskValues:
    """`dbutils.jobs.taskValues`: set into the runner's store, read from this run's earlier tasks."""

    def __init__(self, store: LocalTaskValues, run_values: Callable[[str], Mapping[str, Any] | None]) -> None:
        self._store = store
        self._run_values = run_values

    def set(self, key: str, value: Any) -> None:
        self._store.set(key, value)

    def get(self, taskKey: str, key: str, default: Any = None, debugValue: Any = None) -> Any:
        """The value `key` task `taskKey` of this run set; `default` when it set none."""
        values = self._run_values(taskKey)
        if values is None:
            raise ValueError(f"taskValues.get: task '{taskKey}' has not run before this task in this job run")
        if key in values:
            return values[key]
        if default is None:
            raise ValueError(f"taskValues.get: task '{taskKey}' set no value '{key}' and no default is given")
        return default


class LocalJobs:
    """`dbutils.jobs`."""

    def __init__(self, task_values: LocalJobTaskValues) -> None:
        self.taskValues = task_values


class LocalDbutils:
    """The `dbutils` global of a notebook task the local runner runs."""

    def __init__(
        self,
        parameters: Mapping[str, str],
        store: LocalTaskValues,
        run_values: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self.widgets = LocalWidgets(parameters)
        self.jobs = LocalJobs(LocalJobTaskValues(store, run_values))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"dbutils.{name} is not available to notebook tasks run locally: the local runner provides "
            "dbutils.widgets and dbutils.jobs.taskValues"
        )
