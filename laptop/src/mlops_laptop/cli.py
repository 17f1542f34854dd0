"""The `mlops` command: validate and inspect the bundle, run its jobs locally, manage local state.

Start-up stays close to that of typer itself: this module and the sub-commands' modules import only
typer, the standard library and import-free constants at module level; each command imports what
it uses (bundle loader, Spark, MLflow, the endpoint server, rich) when it runs. Help is plain text
(`rich_markup_mode=None`): typer's rich help formatter alone costs more than importing typer and rich.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from mlops_laptop.console import console, error_console, escape
from mlops_laptop.doctor.cli import doctor_command
from mlops_laptop.jobs import load_target, name_value_pairs, run_local_job
from mlops_laptop.monitoring.cli import monitor_app, simulate_traffic
from mlops_laptop.options import TargetOption, VarOption, fail
from mlops_laptop.registry.cli import model_app
from mlops_laptop.rollout.cli import rollout_app
from mlops_laptop.serving.cli import serve_command

if TYPE_CHECKING:
    pass

app = typer.Typer(
    help="Run the MLOps bundle's jobs locally and check it offline.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
bundle_app = typer.Typer(
    help="Validate and summarize databricks.yml offline.", no_args_is_help=True, rich_markup_mode=None
)
data_app = typer.Typer(help="Local sample data.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(bundle_app, name="bundle")
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.command("serve")(serve_command)
app.add_typer(monitor_app, name="monitor")
app.add_typer(rollout_app, name="rollout")
app.command("simulate-traffic")(simulate_traffic)
app.command("doctor")(doctor_command)


@app.callback()
def _configure_logging(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=error_console(), show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for package in ("mlops_template", "mlops_laptop"):  # what the tasks and the local server say
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


@bundle_app.command("validate")
def bundle_validate(
    target: TargetOption = None,
    var: VarOption = None,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output", "-o", help="json: the resolved bundle, as `databricks bundle validate -o json`."
        ),
    ] = OutputFormat.text,
) -> None:
    """Check databricks.yml and its includes for TARGET offline: schema, references, resources."""
    from mlops_laptop.bundle.validate import bundle_json

    bundle = load_target(target, var)
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(bundle_json(bundle), indent=2, sort_keys=True) + "\n")
        return
    counts = ", ".join(f"{len(items)} {kind}" for kind, items in sorted(bundle.resources.items()))
    console().print(f"[green]Bundle {bundle.name} is valid for target {bundle.target}[/] ({counts}).")


@bundle_app.command("summary")
def bundle_summary(target: TargetOption = None, var: VarOption = None) -> None:
    """Print the resolved variables, jobs and tasks of TARGET."""
    from rich.table import Table

    bundle = load_target(target, var)
    console().print(
        f"Bundle [bold]{bundle.name}[/], target [bold]{bundle.target}[/] (mode {bundle.mode or 'default'})"
    )
    variables = Table("variable", "value", title="Variables")
    for name, value in sorted(bundle.variables.items()):
        variables.add_row(name, escape(str(value)))
    console().print(variables)
    for key, job in bundle.resources.get("jobs", {}).items():
        tasks = Table(
            "task",
            "type",
            "depends on",
            "entry point / condition",
            title=escape(f"Job {key}: {job.get('name')}"),
        )
        for task in job.get("tasks", []):
            tasks.add_row(*[escape(cell) for cell in _describe_task(task)])
        console().print(tasks)


def _describe_task(task: dict) -> tuple[str, str, str, str]:
    depends = ", ".join(
        d["task_key"] + (f" ({d['outcome']})" if "outcome" in d else "") for d in task.get("depends_on", [])
    )
    if "python_wheel_task" in task:
        detail = task["python_wheel_task"]["entry_point"]
        return task["task_key"], "python_wheel_task", depends, detail
    if "condition_task" in task:
        c = task["condition_task"]
        return task["task_key"], "condition_task", depends, f"{c['left']} {c['op']} {c['right']}"
    kind = next((k for k in task if k.endswith("_task")), "?")
    return task["task_key"], kind, depends, str(task.get(kind, {}).get("job_id", ""))


@app.command("run")
def run_job(
    job: Annotated[str, typer.Argument(help="Job key under resources.jobs.")],
    target: TargetOption = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Job parameter name=value (repeatable).")
    ] = None,
    var: VarOption = None,
) -> None:
    """Run JOB's tasks locally in dependency order, in one process with one Spark session."""
    run_local_job(load_target(target, var), job, name_value_pairs(param, "--param"))


@app.command("reset")
def reset(target: TargetOption = None) -> None:
    """Delete TARGET's local state (tables, metastore, MLflow store, runs)."""
    from mlops_laptop.platform.local import LocalPlatform, LocalStateError

    bundle = load_target(target, None)
    platform = LocalPlatform(bundle.target)
    try:
        removed = platform.reset()
    except LocalStateError as error:
        raise fail(str(error)) from None
    console().print(
        f"Removed {platform.state_dir}." if removed else f"Nothing to remove at {platform.state_dir}."
    )


@data_app.command("generate")
def generate(
    table: Annotated[str, typer.Option(help="Three-level name of the table to write.")],
    rows: Annotated[int, typer.Option(min=1, help="Number of source rows.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    target: TargetOption = None,
) -> None:
    """Write ROWS sample source rows of the problem spec (its `sample_source`) to TABLE."""
    from mlops_laptop.platform.local import LocalPlatform, LocalStateError
    from mlops_template.problem_spec import load_problem

    problem = load_problem()
    if problem.sample_source is None:
        raise fail(f"the problem spec {problem.name} has no sample_source to generate rows with")
    bundle = load_target(target, None)
    platform = LocalPlatform(bundle.target)
    try:
        platform.save_table(problem.sample_source(platform.spark, rows, seed), table)
    except (LocalStateError, ValueError) as error:
        raise fail(str(error)) from None
    finally:
        platform.stop()
    console().print(f"Wrote {rows} rows of {problem.name} sample data to {table} in {platform.state_dir}.")


@app.command("rename")
def rename_project(
    project: Annotated[str, typer.Option(help="Distribution name, e.g. churn-model.")],
    package: Annotated[str, typer.Option(help="Python package name, e.g. churn_model.")],
    bundle: Annotated[str, typer.Option(help="Bundle name (databricks.yml bundle.name), e.g. churn.")],
    relock: Annotated[bool, typer.Option(help="Run `uv lock` afterwards.")] = True,
) -> None:
    """Rename the project, its package and its bundle in this checkout, then relock (run once)."""
    from pathlib import Path

    from mlops_laptop.rename import Names, RenameError, rename

    try:
        changed = rename(Path.cwd(), Names(project, package, bundle), relock=relock)
    except RenameError as error:
        raise fail(str(error)) from None
    console().print(
        f"Renamed in {len(changed)} files; src/{package}/ is the package. Reinstall with `make install`."
    )
