"""`mlops model status|rollback -t TARGET`: the bundle's model in the target's local registry."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlops_template.bundle.loader import BundleError, find_bundle_root, load_bundle
from mlops_template.pipeline_names import PipelineNames
from mlops_template.platform import LocalPlatform
from mlops_template.registry.versions import RegistryError, model_status, rollback

model_app = typer.Typer(
    help="The registered model: versions, aliases, gate outcomes, rollback.", no_args_is_help=True
)

console = Console()
error_console = Console(stderr=True)

TargetOption = Annotated[
    str | None, typer.Option("--target", "-t", help="Bundle target (default: the bundle's default).")
]


def _fail(message: str) -> typer.Exit:
    error_console.print(f"[bold red]Error:[/] {message}")
    return typer.Exit(2)


def _model_name(target: str | None) -> str:
    """The bundle's `catalog.schema.model_name` for `target`, with MLflow on its local stores."""
    try:
        bundle = load_bundle(find_bundle_root(), target)
    except BundleError as error:
        raise _fail(str(error)) from None
    LocalPlatform(bundle.target).configure_mlflow()
    return PipelineNames.of(bundle).model_name


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@model_app.command("status")
def status(target: TargetOption = None) -> None:
    """List the model's versions with their aliases, held-out metrics and gate outcome."""
    name = _model_name(target)
    try:
        versions = model_status(name)
    except RegistryError as error:
        raise _fail(str(error)) from None
    table = Table(title=f"Model {name}", box=None, pad_edge=False)
    for column in ("version", "aliases", "created (UTC)", "RMSE", "MAE", "R2", "gate"):
        table.add_column(column, no_wrap=True)
    for version in versions:
        table.add_row(
            str(version.version),
            "\n".join(version.aliases),
            version.created.strftime("%Y-%m-%d %H:%M"),
            _number(version.metrics.get("rmse")),
            _number(version.metrics.get("mae")),
            _number(version.metrics.get("r2")),
            version.gate_outcome or "not run",
        )
    console.print(table)
    for version in versions:
        if version.gate_reason:
            console.print(f"version {version.version} {version.gate_outcome}: {version.gate_reason}")


@model_app.command("rollback")
def rollback_command(target: TargetOption = None) -> None:
    """Move the `champion` alias back to `previous_champion`."""
    name = _model_name(target)
    try:
        result = rollback(name)
    except RegistryError as error:
        raise _fail(str(error)) from None
    console.print(
        f"[green]{name}: champion is version {result.champion} again[/] "
        f"(version {result.rolled_back} is now 'rolled_back')."
    )
