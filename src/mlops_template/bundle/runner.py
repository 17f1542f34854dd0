"""The local job runner: runs a resolved bundle job's tasks in one process, like a Databricks job run.

Supported: `python_wheel_task` (entry points of installed packages, argv as Databricks passes
it), `condition_task`, `run_job_task`; `depends_on` with `outcome`, `run_if`, job `parameters`
and the dynamic references `{{job.id}}`, `{{job.name}}`, `{{job.run_id}}`,
`{{job.parameters.NAME}}`, `{{job.start_time.iso_date}}`, `{{job.start_time.iso_datetime}}`,
`{{task.name}}` and `{{tasks.KEY.values.NAME}}`. Anything else is an error naming it.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from mlops_template.platform.task_values import LocalTaskValues


class JobDefinitionError(ValueError):
    """The job uses something the local runner cannot run, or is inconsistent."""


class TaskStatus(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    EXCLUDED = "EXCLUDED"  # a condition it depends on had the other outcome
    UPSTREAM_FAILED = "UPSTREAM_FAILED"  # its run_if could not be met after failures


@dataclass
class TaskResult:
    task_key: str
    status: TaskStatus
    seconds: float = 0.0
    error: str | None = None
    outcome: str | None = None  # "true" / "false" for condition tasks
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobRunResult:
    job_key: str
    run_id: int
    parameters: dict[str, str]
    tasks: list[TaskResult] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return all(t.status in (TaskStatus.SUCCESS, TaskStatus.EXCLUDED) for t in self.tasks)

    def task(self, task_key: str) -> TaskResult:
        return next(t for t in self.tasks if t.task_key == task_key)


class RunReporter(Protocol):
    """Receives progress of a run (the CLI shows it with rich)."""

    def task_started(self, job_key: str, task_key: str) -> None: ...

    def task_finished(self, job_key: str, result: TaskResult) -> None: ...


TASK_TYPES_RUN_LOCALLY = ("python_wheel_task", "condition_task", "run_job_task")
TASK_TYPES_NOT_RUN_LOCALLY = (
    "notebook_task",
    "spark_python_task",
    "spark_jar_task",
    "spark_submit_task",
    "pipeline_task",
    "sql_task",
    "dbt_task",
    "for_each_task",
    "clean_rooms_notebook_task",
    "dashboard_task",
    "power_bi_task",
    "gen_ai_compute_task",
    "dbt_platform_task",
    "alert_task",
)
# Keys that only matter to a deployed job (compute, retries, notifications): no local effect.
DEPLOY_ONLY_TASK_KEYS = frozenset(
    {
        "description",
        "environment_key",
        "job_cluster_key",
        "existing_cluster_id",
        "new_cluster",
        "libraries",
        "timeout_seconds",
        "max_retries",
        "min_retry_interval_millis",
        "retry_on_timeout",
        "email_notifications",
        "webhook_notifications",
        "notification_settings",
        "health",
        "disable_auto_optimization",
    }
)
DEPLOY_ONLY_JOB_KEYS = frozenset(
    {
        "name",
        "description",
        "schedule",
        "trigger",
        "environments",
        "max_concurrent_runs",
        "email_notifications",
        "webhook_notifications",
        "notification_settings",
        "tags",
        "timeout_seconds",
        "queue",
        "permissions",
        "job_clusters",
        "health",
        "edit_mode",
        "performance_target",
        "run_as",
        "budget_policy_id",
        "usage_policy_id",
    }
)

_REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "EQUAL_TO": operator.eq,
    "NOT_EQUAL": operator.ne,
    "GREATER_THAN": operator.gt,
    "GREATER_THAN_OR_EQUAL": operator.ge,
    "LESS_THAN": operator.lt,
    "LESS_THAN_OR_EQUAL": operator.le,
}


def evaluate_condition(op: str, left: str, right: str) -> bool:
    """Compare like a Databricks condition task: as numbers when both are, else as strings."""
    if op not in _COMPARISONS:
        raise JobDefinitionError(f"condition_task.op '{op}' is not one of {sorted(_COMPARISONS)}")
    try:
        return _COMPARISONS[op](float(left), float(right))
    except ValueError:
        if op not in ("EQUAL_TO", "NOT_EQUAL"):
            raise JobDefinitionError(
                f"condition_task {op} needs numbers, got '{left}' and '{right}'"
            ) from None
        return _COMPARISONS[op](left, right)


def order_tasks(job_key: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks in dependency order (stable with respect to the YAML order); cycles are errors."""
    by_key = {task["task_key"]: task for task in tasks}
    if len(by_key) != len(tasks):
        raise JobDefinitionError(f"job {job_key}: two tasks share a task_key")
    for task in tasks:
        for dependency in task.get("depends_on", []):
            if dependency["task_key"] not in by_key:
                raise JobDefinitionError(
                    f"job {job_key}: task {task['task_key']} depends on unknown task "
                    f"'{dependency['task_key']}'"
                )
    ordered: list[dict[str, Any]] = []
    done: set[str] = set()
    while len(ordered) < len(tasks):
        ready = [
            t
            for t in tasks
            if t["task_key"] not in done and all(d["task_key"] in done for d in t.get("depends_on", []))
        ]
        if not ready:
            cycle = sorted(set(by_key) - done)
            raise JobDefinitionError(f"job {job_key}: tasks {cycle} depend on each other in a cycle")
        ordered.append(ready[0])
        done.add(ready[0]["task_key"])
    return ordered


def check_job(job_key: str, job: Mapping[str, Any]) -> None:
    """Fail naming the first job or task key the local runner does not support."""
    for key in job:
        if key not in DEPLOY_ONLY_JOB_KEYS | {"tasks", "parameters"}:
            raise JobDefinitionError(f"job {job_key}: key '{key}' is not supported by the local runner")
    for task in job.get("tasks", []):
        task_key = task.get("task_key", "?")
        types = [k for k in task if k in TASK_TYPES_RUN_LOCALLY or k in TASK_TYPES_NOT_RUN_LOCALLY]
        if len(types) != 1:
            raise JobDefinitionError(
                f"job {job_key}: task {task_key} must have exactly one task type, has {types}"
            )
        if types[0] in TASK_TYPES_NOT_RUN_LOCALLY:
            raise JobDefinitionError(
                f"job {job_key}: task {task_key} is a {types[0]}, which the local runner does not run "
                f"(it runs {', '.join(TASK_TYPES_RUN_LOCALLY)})"
            )
        for key in task:
            if key not in DEPLOY_ONLY_TASK_KEYS | {"task_key", "depends_on", "run_if", types[0]}:
                raise JobDefinitionError(
                    f"job {job_key}: task {task_key}: key '{key}' is not supported by the local runner"
                )


def run_if_met(run_if: str, statuses: list[TaskStatus]) -> bool:
    """Databricks `run_if` over the statuses of a task's (non-excluded) dependencies."""
    succeeded = [s == TaskStatus.SUCCESS for s in statuses]
    failed = [s in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED) for s in statuses]
    rules = {
        "ALL_SUCCESS": all(succeeded),
        "AT_LEAST_ONE_SUCCESS": any(succeeded),
        "NONE_FAILED": not any(failed),
        "ALL_DONE": True,
        "AT_LEAST_ONE_FAILED": any(failed),
        "ALL_FAILED": bool(statuses) and all(failed),
    }
    if run_if not in rules:
        raise JobDefinitionError(f"run_if '{run_if}' is not one of {sorted(rules)}")
    return rules[run_if]


@dataclass
class _RunContext:
    job_key: str
    job_name: str
    run_id: int
    parameters: dict[str, str]
    start_time: dt.datetime
    results: dict[str, TaskResult] = field(default_factory=dict)


class LocalJobRunner:
    """Runs jobs of a resolved bundle in this process, sharing the platform's Spark session."""

    def __init__(
        self,
        jobs: Mapping[str, Mapping[str, Any]],
        task_values: LocalTaskValues,
        runs_dir: Path,
        reporter: RunReporter | None = None,
    ) -> None:
        self.jobs = jobs
        self.task_values = task_values
        self.runs_dir = runs_dir
        self.reporter = reporter

    def run(self, job_key: str, parameters: Mapping[str, str] | None = None) -> JobRunResult:
        """Run every task of `job_key`; the result says which failed (it does not raise for them)."""
        job = self._job(job_key)
        check_job(job_key, job)
        tasks = order_tasks(job_key, list(job.get("tasks", [])))
        context = _RunContext(
            job_key=job_key,
            job_name=str(job.get("name", job_key)),
            run_id=self._next_run_id(),
            parameters=self._job_parameters(job_key, job, parameters or {}),
            start_time=dt.datetime.now(dt.UTC),
        )
        for task in tasks:
            context.results[task["task_key"]] = self._run_task(task, context)
        result = JobRunResult(job_key, context.run_id, context.parameters, list(context.results.values()))
        self._record(result)
        return result

    def _job(self, job_key: str) -> Mapping[str, Any]:
        if job_key not in self.jobs:
            raise JobDefinitionError(f"unknown job '{job_key}': the bundle defines {sorted(self.jobs)}")
        return self.jobs[job_key]

    @staticmethod
    def _job_parameters(job_key: str, job: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
        defaults = {p["name"]: str(p.get("default", "")) for p in job.get("parameters", [])}
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise JobDefinitionError(
                f"job {job_key} has no parameter {unknown}; its parameters are {sorted(defaults)}"
            )
        return {**defaults, **{k: str(v) for k, v in given.items()}}

    def _run_task(self, task: Mapping[str, Any], context: _RunContext) -> TaskResult:
        key = task["task_key"]
        dependencies = task.get("depends_on", [])
        statuses = [context.results[d["task_key"]].status for d in dependencies]
        unmet_outcome = any(
            "outcome" in d and context.results[d["task_key"]].outcome != d["outcome"] for d in dependencies
        )
        run_if = task.get("run_if", "ALL_SUCCESS")
        if unmet_outcome or (run_if == "ALL_SUCCESS" and TaskStatus.EXCLUDED in statuses):
            return self._finish(context, TaskResult(key, TaskStatus.EXCLUDED))
        if not run_if_met(run_if, [s for s in statuses if s != TaskStatus.EXCLUDED]):
            return self._finish(context, TaskResult(key, TaskStatus.UPSTREAM_FAILED))
        if self.reporter:
            self.reporter.task_started(context.job_key, key)
        started = time.perf_counter()
        try:
            outcome = self._execute(task, context)
            result = TaskResult(key, TaskStatus.SUCCESS, outcome=outcome)
        except KeyboardInterrupt:
            raise
        except BaseException as error:
            result = TaskResult(key, TaskStatus.FAILED, error=_describe(error))
        result.seconds = time.perf_counter() - started
        result.values = self.task_values.of_task(key)
        return self._finish(context, result)

    def _finish(self, context: _RunContext, result: TaskResult) -> TaskResult:
        if self.reporter:
            self.reporter.task_finished(context.job_key, result)
        return result

    def _execute(self, task: Mapping[str, Any], context: _RunContext) -> str | None:
        key = task["task_key"]

        def resolve(value: Any) -> str:
            return self._substitute(str(value), context, key)

        if "condition_task" in task:
            condition = task["condition_task"]
            met = evaluate_condition(condition["op"], resolve(condition["left"]), resolve(condition["right"]))
            return "true" if met else "false"
        if "run_job_task" in task:
            self._run_child_job(task["run_job_task"], resolve)
            return None
        self._run_wheel_task(key, task["python_wheel_task"], resolve)
        return None

    def _run_child_job(self, spec: Mapping[str, Any], resolve: Callable[[Any], str]) -> None:
        parameters = {k: resolve(v) for k, v in spec.get("job_parameters", {}).items()}
        child = self.run(str(spec["job_id"]), parameters)
        if not child.succeeded:
            failed = [t.task_key for t in child.tasks if t.status == TaskStatus.FAILED]
            raise RuntimeError(f"job {spec['job_id']} (run {child.run_id}) failed in tasks {failed}")

    def _run_wheel_task(self, key: str, spec: Mapping[str, Any], resolve: Callable[[Any], str]) -> None:
        arguments = [resolve(a) for a in spec.get("parameters", [])]
        arguments += [f"--{k}={resolve(v)}" for k, v in spec.get("named_parameters", {}).items()]
        function = load_entry_point(spec["package_name"], spec["entry_point"])
        saved_argv = sys.argv
        sys.argv = [spec["entry_point"], *arguments]
        self.task_values.current_task = key
        try:
            exit_code = function()
        except SystemExit as exit_:
            exit_code = exit_.code
        finally:
            sys.argv = saved_argv
            self.task_values.current_task = None
        if exit_code not in (None, 0):
            raise RuntimeError(f"entry point {spec['entry_point']} exited with {exit_code}")

    def _substitute(self, value: str, context: _RunContext, task_key: str) -> str:
        return _REFERENCE.sub(lambda match: self._reference(match.group(1), context, task_key), value)

    def _reference(self, name: str, context: _RunContext, task_key: str) -> str:
        fixed = {
            "job.id": context.job_key,
            "job.name": context.job_name,
            "job.run_id": str(context.run_id),
            "job.start_time.iso_date": context.start_time.date().isoformat(),
            "job.start_time.iso_datetime": context.start_time.isoformat(timespec="seconds"),
            "task.name": task_key,
        }
        if name in fixed:
            return fixed[name]
        parts = name.split(".")
        if parts[:2] == ["job", "parameters"] and len(parts) == 3:
            if parts[2] not in context.parameters:
                raise JobDefinitionError(f"task {task_key}: {{{{{name}}}}} names no job parameter")
            return context.parameters[parts[2]]
        if parts[0] == "tasks" and len(parts) == 4 and parts[2] == "values":
            return self._task_value(parts[1], parts[3], context, task_key)
        raise JobDefinitionError(
            f"task {task_key}: dynamic value reference {{{{{name}}}}} is not supported locally"
        )

    @staticmethod
    def _task_value(source: str, name: str, context: _RunContext, task_key: str) -> str:
        if source not in context.results:
            raise JobDefinitionError(
                f"task {task_key} reads values of task '{source}', which has not run before it"
            )
        values = context.results[source].values
        if name not in values:
            raise JobDefinitionError(
                f"task {task_key} reads task value '{name}' that task {source} did not set"
            )
        value = values[name]
        return value if isinstance(value, str) else json.dumps(value)

    def _next_run_id(self) -> int:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        ids = [int(p.stem) for p in self.runs_dir.glob("*.json") if p.stem.isdigit()]
        run_id = max(ids, default=0) + 1
        (self.runs_dir / f"{run_id}.json").write_text("{}")  # reserve the id for child runs
        return run_id

    def _record(self, result: JobRunResult) -> None:
        (self.runs_dir / f"{result.run_id}.json").write_text(
            json.dumps(asdict(result), indent=2, default=str)
        )


def load_entry_point(package_name: str, entry_point: str) -> Callable[[], Any]:
    """The console-script entry point `entry_point` of the installed distribution `package_name`."""
    wanted = _normalize(package_name)
    for candidate in entry_points(group="console_scripts", name=entry_point):
        if candidate.dist is not None and _normalize(candidate.dist.name) == wanted:
            return candidate.load()
    raise JobDefinitionError(
        f"entry point '{entry_point}' of package '{package_name}' is not installed: declare it in "
        "[project.scripts] of pyproject.toml and re-install (uv sync)"
    )


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _describe(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)).rstrip()
