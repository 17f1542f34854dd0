"""The local job runner: runs a resolved bundle job's tasks in one process, like a Databricks job run.

Supported: `python_wheel_task` (entry points of installed packages, argv as Databricks passes
it), `notebook_task` (source notebooks, with a local `dbutils`: widgets and task values),
`condition_task`, `run_job_task`; `depends_on` with `outcome`, `run_if`, job `parameters` with
their pushdown (https://docs.databricks.com/jobs/job-parameters.html: to notebook tasks, wheel
tasks with `named_parameters` and run-job tasks; the job's value wins over the task's) and the
dynamic references `{{job.id}}`, `{{job.name}}`, `{{job.run_id}}`, `{{job.parameters.NAME}}`,
`{{job.start_time.iso_date}}`, `{{job.start_time.iso_datetime}}`, `{{task.name}}` and
`{{tasks.KEY.values.NAME}}`. Anything else is an error naming it. Only notebook tasks may set
task values (https://docs.databricks.com/jobs/task-values.html).
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
from typing import TYPE_CHECKING, Any, Protocol

from mlops_laptop.bundle.local_dbutils import LocalDbutils
from mlops_laptop.bundle.local_notebook import run_notebook
from mlops_template.platform.task_values import LocalTaskValues

if TYPE_CHECKING:
    from mlops_laptop.bundle.loader import ResolvedBundle


class JobDefinitionError(ValueError):
    """The job uses something the local runner cannot run, or is inconsistent."""


class TaskStatus(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    EXCLUDED = "EXCLUDED"  # skipped and counted as a success: branch not taken, failure handler not needed
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


TASK_TYPES_RUN_LOCALLY = ("python_wheel_task", "notebook_task", "condition_task", "run_job_task")
TASK_TYPES_NOT_RUN_LOCALLY = (
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

NOTEBOOK_TASK_KEYS = frozenset({"notebook_path", "base_parameters", "source"})
# run_if conditions that handle failures: unmet, the task is EXCLUDED; unmet others: UPSTREAM_FAILED.
FAILURE_HANDLING_RUN_IFS = frozenset({"AT_LEAST_ONE_FAILED", "ALL_FAILED"})

_REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_STRING_COMPARISONS: dict[str, Callable[[str, str], bool]] = {
    "EQUAL_TO": operator.eq,
    "NOT_EQUAL": operator.ne,
}
_NUMBER_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GREATER_THAN": operator.gt,
    "GREATER_THAN_OR_EQUAL": operator.ge,
    "LESS_THAN": operator.lt,
    "LESS_THAN_OR_EQUAL": operator.le,
}


def evaluate_condition(op: str, left: str, right: str) -> bool:
    """Compare like a Databricks condition task: `EQUAL_TO` / `NOT_EQUAL` as strings ("12.0" is
    not "12"), the ordering operators as numbers (https://docs.databricks.com/jobs/if-else.html)."""
    if op in _STRING_COMPARISONS:
        return _STRING_COMPARISONS[op](left, right)
    if op not in _NUMBER_COMPARISONS:
        known = sorted([*_STRING_COMPARISONS, *_NUMBER_COMPARISONS])
        raise JobDefinitionError(f"condition_task.op '{op}' is not one of {known}")
    try:
        return _NUMBER_COMPARISONS[op](float(left), float(right))
    except ValueError:
        raise JobDefinitionError(f"condition_task {op} needs numbers, got '{left}' and '{right}'") from None


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
        if types[0] == "notebook_task":
            _check_notebook_task(job_key, task_key, task["notebook_task"])


def _check_notebook_task(job_key: str, task_key: str, spec: Mapping[str, Any]) -> None:
    for key in spec:
        if key not in NOTEBOOK_TASK_KEYS:
            raise JobDefinitionError(
                f"job {job_key}: task {task_key}: notebook_task.{key} is not supported by the local runner"
            )
    if spec.get("source", "WORKSPACE") != "WORKSPACE":
        raise JobDefinitionError(
            f"job {job_key}: task {task_key}: notebook_task.source {spec['source']} is not supported "
            "locally (the runner runs notebooks of the bundle)"
        )


def run_if_met(run_if: str, statuses: list[TaskStatus]) -> bool:
    """Databricks `run_if` over the statuses of a task's (non-excluded) dependencies
    (https://docs.databricks.com/jobs/run-if.html)."""
    succeeded = [s == TaskStatus.SUCCESS for s in statuses]
    failed = [s in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED) for s in statuses]
    rules = {
        "ALL_SUCCESS": all(succeeded),
        "AT_LEAST_ONE_SUCCESS": any(succeeded),
        "NONE_FAILED": not any(failed) and bool(statuses),
        "ALL_DONE": True,
        "AT_LEAST_ONE_FAILED": any(failed),
        "ALL_FAILED": bool(statuses) and all(failed),
    }
    if run_if not in rules:
        raise JobDefinitionError(f"run_if '{run_if}' is not one of {sorted(rules)}")
    return rules[run_if]


def gate_status(run_if: str, statuses: list[TaskStatus]) -> TaskStatus | None:
    """None if a task whose dependencies ended in `statuses` runs, else the status it gets instead.

    As the Jobs service does (https://docs.databricks.com/jobs/run-if.html): a task whose
    dependencies are all excluded is excluded; otherwise excluded dependencies are skipped, "treated
    as successful", and an unmet failure-handling `run_if` excludes the task while another unmet
    `run_if` marks it upstream-failed. (A dependency on a condition's other outcome counts as excluded.)
    """
    if statuses and all(s == TaskStatus.EXCLUDED for s in statuses):
        return TaskStatus.EXCLUDED
    if not run_if_met(run_if, [s for s in statuses if s != TaskStatus.EXCLUDED]):
        return TaskStatus.EXCLUDED if run_if in FAILURE_HANDLING_RUN_IFS else TaskStatus.UPSTREAM_FAILED
    return None


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
        *,
        job_files: Mapping[str, Path] | None = None,
    ) -> None:
        """`job_files`: the YAML file defining each job, which relative notebook paths start from."""
        self.jobs = jobs
        self.task_values = task_values
        self.runs_dir = runs_dir
        self.reporter = reporter
        self.job_files = dict(job_files or {})

    @classmethod
    def for_bundle(
        cls,
        bundle: ResolvedBundle,
        task_values: LocalTaskValues,
        runs_dir: Path,
        reporter: RunReporter | None = None,
    ) -> LocalJobRunner:
        """A runner of the bundle's jobs, resolving notebook paths as the CLI does."""
        jobs = bundle.resources.get("jobs", {})
        files = {
            key: bundle.root / bundle.sources[f"resources.jobs.{key}"]
            for key in jobs
            if f"resources.jobs.{key}" in bundle.sources
        }
        return cls(jobs, task_values, runs_dir, reporter, job_files=files)

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
        statuses = [_dependency_status(d, context) for d in task.get("depends_on", [])]
        skipped = gate_status(task.get("run_if", "ALL_SUCCESS"), statuses) if statuses else None
        if skipped is not None:
            return self._finish(context, TaskResult(key, skipped))
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
        result.values = self.task_values.of_task(key) if "notebook_task" in task else {}
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
            spec = task["condition_task"]
            operands = [self._substitute(str(spec[s]), context, key, operand=True) for s in ("left", "right")]
            return "true" if evaluate_condition(spec["op"], *operands) else "false"
        if "run_job_task" in task:
            self._run_child_job(task["run_job_task"], resolve, context)
        elif "notebook_task" in task:
            self._run_notebook_task(key, task["notebook_task"], resolve, context)
        else:
            self._run_wheel_task(key, task["python_wheel_task"], resolve, context)
        return None

    def _run_child_job(
        self, spec: Mapping[str, Any], resolve: Callable[[Any], str], context: _RunContext
    ) -> None:
        """Run the job `job_id` with the task's `job_parameters` and, pushed down over them, this
        job's parameters (https://docs.databricks.com/jobs/run-job.html): the child must define
        every one of them."""
        child_key = str(spec["job_id"])
        parameters = {k: resolve(v) for k, v in spec.get("job_parameters", {}).items()} | context.parameters
        child_job = self._job(child_key)
        defined = {p["name"] for p in child_job.get("parameters", [])}
        undefined = sorted(set(parameters) - defined)
        if undefined:
            raise JobDefinitionError(
                f"job {child_key} does not define the parameters {undefined} that job {context.job_key} "
                "passes to it (a run_job_task pushes down every parameter of its job): declare them in job "
                f"{child_key} or remove them from job {context.job_key}"
            )
        child = self.run(child_key, parameters)
        if not child.succeeded:
            failed = [t.task_key for t in child.tasks if t.status == TaskStatus.FAILED]
            raise RuntimeError(f"job {child_key} (run {child.run_id}) failed in tasks {failed}")

    def _run_notebook_task(
        self, key: str, spec: Mapping[str, Any], resolve: Callable[[Any], str], context: _RunContext
    ) -> None:
        parameters = {k: resolve(v) for k, v in spec.get("base_parameters", {}).items()} | context.parameters
        dbutils = LocalDbutils(parameters, self.task_values, lambda task: _values_of(task, context))
        with self.task_values.running(key, "notebook_task"):
            run_notebook(self._notebook_path(context.job_key, key, str(spec["notebook_path"])), dbutils)

    def _notebook_path(self, job_key: str, task_key: str, notebook_path: str) -> Path:
        """The local file of `notebook_path`: relative to the job's YAML file, as the CLI resolves it."""
        if notebook_path.startswith("/"):
            raise JobDefinitionError(
                f"job {job_key}: task {task_key}: notebook_path {notebook_path} is a workspace path; "
                "the local runner runs notebooks of the bundle (a path relative to the job's YAML file)"
            )
        if job_key not in self.job_files:
            raise JobDefinitionError(
                f"job {job_key}: task {task_key}: the runner does not know the file defining the job, so "
                f"it cannot resolve notebook_path {notebook_path} (build it with LocalJobRunner.for_bundle)"
            )
        return (self.job_files[job_key].parent / notebook_path).resolve()

    def _run_wheel_task(
        self, key: str, spec: Mapping[str, Any], resolve: Callable[[Any], str], context: _RunContext
    ) -> None:
        arguments = [resolve(a) for a in spec.get("parameters", [])]
        if "named_parameters" in spec:  # keyword arguments: the job's parameters are pushed down
            named = {k: resolve(v) for k, v in spec["named_parameters"].items()} | context.parameters
            arguments += [f"--{k}={v}" for k, v in named.items()]
        function = load_entry_point(spec["package_name"], spec["entry_point"])
        saved_argv = sys.argv
        sys.argv = [spec["entry_point"], *arguments]
        try:
            with self.task_values.running(key, "python_wheel_task"):
                exit_code = function()
        except SystemExit as exit_:
            exit_code = exit_.code
        finally:
            sys.argv = saved_argv
        if exit_code not in (None, 0):
            raise RuntimeError(f"entry point {spec['entry_point']} exited with {exit_code}")

    def _substitute(self, value: str, context: _RunContext, task_key: str, *, operand: bool = False) -> str:
        return _REFERENCE.sub(
            lambda match: self._reference(match.group(1), context, task_key, operand), value
        )

    def _reference(self, name: str, context: _RunContext, task_key: str, operand: bool = False) -> str:
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
            return self._task_value(parts[1], parts[3], context, task_key, operand)
        raise JobDefinitionError(
            f"task {task_key}: dynamic value reference {{{{{name}}}}} is not supported locally"
        )

    @staticmethod
    def _task_value(source: str, name: str, context: _RunContext, task_key: str, operand: bool) -> str:
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
        if operand and not isinstance(value, str | int | float | bool):
            raise JobDefinitionError(
                f"condition task {task_key} compares task value '{name}' of task {source}, a "
                f"{type(value).__name__}: conditions accept only numbers, strings and booleans"
            )
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


def _dependency_status(dependency: Mapping[str, Any], context: _RunContext) -> TaskStatus:
    """A dependency's status; a dependency on a condition's other outcome counts as excluded."""
    result = context.results[dependency["task_key"]]
    if "outcome" in dependency and result.outcome != dependency["outcome"]:
        return TaskStatus.EXCLUDED
    return result.status


def _values_of(task_key: str, context: _RunContext) -> dict[str, Any] | None:
    """The task values task `task_key` of this run set; None if it has not run."""
    result = context.results.get(task_key)
    return None if result is None else result.values


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
