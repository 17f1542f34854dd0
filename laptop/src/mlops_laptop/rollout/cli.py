"""`mlops rollout report -t TARGET`: the latest per-variant analysis of the live experiment."""

from __future__ import annotations

import typer

from mlops_laptop.console import console
from mlops_laptop.options import TargetOption, fail

rollout_app = typer.Typer(
    help="The live experiment (canary or A/B test): per-variant metrics and the decision.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@rollout_app.command("report")
def report(target: TargetOption = None) -> None:
    """Print the latest rollout analysis of TARGET: each variant's requests, errors, latency,
    predictions, RMSE and MAE with confidence intervals, the difference, and the decision."""
    from mlops_laptop.bundle.loader import BundleError, find_bundle_root, load_bundle
    from mlops_laptop.pipeline_names import pipeline_names
    from mlops_laptop.platform.local import LocalPlatform, LocalStateError
    from mlops_laptop.rollout.report import latest_rows, rollout_report
    from mlops_template.platform import MissingTableError
    from mlops_template.registry.versions import RegistryError
    from mlops_template.tasks.rollout_metrics import current_experiment

    try:
        bundle = load_bundle(find_bundle_root(), target)
        names = pipeline_names(bundle)
    except (BundleError, ValueError) as error:
        raise fail(str(error)) from None
    table = names.monitoring_tables.rollout_metrics
    producers = f"`mlops run monitoring -t {bundle.target}` or `mlops run rollout -t {bundle.target}`"
    platform = LocalPlatform(bundle.target)
    try:
        platform.configure_mlflow()
        rows = latest_rows(platform, table, produced_by=producers)
        experiment = current_experiment(names.model_name)
    except (MissingTableError, LocalStateError, RegistryError) as error:
        raise fail(str(error)) from None
    finally:
        platform.stop()
    console().print(rollout_report(rows, experiment))
