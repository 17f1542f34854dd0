"""`mlops model status|rollback -t TARGET`: the bundle's model in the target's local registry; a
rollback also redeploys the endpoint (the rollout job)."""

from __future__ import annotations

import typer

from mlops_laptop.console import console
from mlops_laptop.options import TargetOption, VarOption, fail

model_app = typer.Typer(
    help="The registered model: versions, aliases, gate outcomes, rollback.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _model_name(target: str | None) -> str:
    """The bundle's `catalog.schema.model_name` for `target`, with MLflow on its local stores."""
    from mlops_laptop.bundle.loader import BundleError, find_bundle_root, load_bundle
    from mlops_laptop.pipeline_names import pipeline_names
    from mlops_laptop.platform.local import LocalPlatform

    try:
        bundle = load_bundle(find_bundle_root(), target)
    except BundleError as error:
        raise fail(str(error)) from None
    LocalPlatform(bundle.target).configure_mlflow()
    return pipeline_names(bundle).model_name


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@model_app.command("status")
def status(target: TargetOption = None) -> None:
    """List the model's versions with their aliases, held-out metrics and gate outcome."""
    from rich.table import Table

    from mlops_template.problem_spec import load_problem
    from mlops_template.registry.versions import RegistryError, model_status

    name = _model_name(target)
    try:
        versions = model_status(name)
    except RegistryError as error:
        raise fail(str(error)) from None
    spec = load_problem()
    metrics = [spec.primary_metric, *(m for m in spec.metric_names if m != spec.primary_metric)]
    table = Table(title=f"Model {name}", box=None, pad_edge=False)
    for column in ("version", "aliases", "created (UTC)", *metrics, "gate", "rollout"):
        table.add_column(column, no_wrap=True)
    for version in versions:
        table.add_row(
            str(version.version),
            "\n".join(version.aliases),
            version.created.strftime("%Y-%m-%d %H:%M"),
            *(_number(version.metrics.get(metric)) for metric in metrics),
            version.gate_outcome or "not run",
            version.rollout_outcome or "",
        )
    console().print(table)
    for version in versions:
        if version.gate_reason:
            console().print(f"version {version.version} {version.gate_outcome}: {version.gate_reason}")
        if version.rollout_reason:
            console().print(f"version {version.version} {version.rollout_outcome}: {version.rollout_reason}")


@model_app.command("rollback")
def rollback_command(target: TargetOption = None, var: VarOption = None) -> None:
    """Move `champion` back to `previous_champion` and serve it: runs the bundle's rollout job with
    action=rollback, as `databricks bundle run rollout --params action=rollback` does on Databricks
    (a running experiment ends first). --var as for `mlops run`, e.g. the target's rollout policy."""
    from mlops_laptop.jobs import load_target, run_local_job
    from mlops_template.registry.versions import CHAMPION, get_aliases

    bundle = load_target(target, var)
    run_local_job(bundle, "rollout", {"action": "rollback"})
    name = _model_name(bundle.target)
    console().print(f"[green]{name}: champion is version {get_aliases(name)[CHAMPION]} again[/], and served.")
