"""Running the bundle's jobs from the command line: the resolved target, the job run with its
tasks shown as they go, and the summary (`mlops run`, `mlops model rollback`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mlops_laptop.console import console, error_console
from mlops_laptop.options import fail

if TYPE_CHECKING:
    from rich.table import Table

    from mlops_laptop.bundle.loader import ResolvedBundle
    from mlops_laptop.bundle.runner import JobRunResult, TaskResult, TaskStatus


def name_value_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """`name=value` option values as a mapping; a clear error naming `option` otherwise."""
    pairs: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected name=value, got '{item}'", param_hint=option)
        pairs[name] = value
    return pairs


def load_target(target: str | None, variables: list[str] | None) -> ResolvedBundle:
    """The bundle resolved for `target` and validated; a clear error and exit when it is not valid."""
    from mlops_laptop.bundle.loader import BundleError, find_bundle_root
    from mlops_laptop.bundle.validate import validate_bundle

    try:
        return validate_bundle(find_bundle_root(), target, name_value_pairs(variables, "--var"))
    except BundleError as error:
        raise fail(str(error)) from None


def _status_style(status: TaskStatus) -> str:
    from mlops_laptop.bundle.runner import TaskStatus

    return {
        TaskStatus.SUCCESS: "green",
        TaskStatus.FAILED: "bold red",
        TaskStatus.EXCLUDED: "yellow",
        TaskStatus.UPSTREAM_FAILED: "red",
    }[status]


class _RichReporter:
    """Shows each task's start and end as the runner goes."""

    def task_started(self, job_key: str, task_key: str) -> None:
        console().print(f"[bold cyan]>[/] {job_key}.{task_key} started")

    def task_finished(self, job_key: str, result: TaskResult) -> None:
        from rich.panel import Panel

        style = _status_style(result.status)
        console().print(f"  {job_key}.{result.task_key} [{style}]{result.status}[/] ({result.seconds:.1f}s)")
        if result.error:
            error_console().print(Panel(result.error, title=f"{result.task_key} failed", border_style="red"))


def _summary_table(result: JobRunResult) -> Table:
    from rich.table import Table

    table = Table("task", "status", "seconds", title=f"Run {result.run_id} of job {result.job_key}")
    for task in result.tasks:
        style = _status_style(task.status)
        table.add_row(task.task_key, f"[{style}]{task.status}[/]", f"{task.seconds:.1f}")
    return table


def run_local_job(bundle: ResolvedBundle, job: str, parameters: dict[str, str]) -> JobRunResult:
    """Run `job` of `bundle` locally, showing each task and a summary; exit 1 when a task failed."""
    from mlops_laptop.bundle.runner import JobDefinitionError, LocalJobRunner
    from mlops_laptop.platform.local import LocalPlatform, LocalStateError
    from mlops_template.platform import activate

    platform = LocalPlatform(bundle.target)
    activate(platform)
    runner = LocalJobRunner.for_bundle(
        bundle, platform.task_values, platform.state_dir / "runs", _RichReporter()
    )
    try:
        result = runner.run(job, parameters)
    except (JobDefinitionError, LocalStateError) as error:
        raise fail(str(error)) from None
    finally:
        platform.stop()
        activate(None)
    console().print(_summary_table(result))
    if not result.succeeded:
        raise fail(f"job {job} failed (run {result.run_id})", code=1)
    return result
