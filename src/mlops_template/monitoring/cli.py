"""`mlops monitor`: read a target's monitoring results locally."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops_template.bundle.loader import BundleError, find_bundle_root, load_bundle
from mlops_template.monitoring.config import MonitoringThresholds, ThresholdsError
from mlops_template.monitoring.metrics import metrics_frame
from mlops_template.monitoring.report import format_report
from mlops_template.monitoring.tables import MonitoringTables, granularity_length
from mlops_template.platform import LocalPlatform, LocalStateError, MissingTableError

monitor_app = typer.Typer(
    help="Drift, quality and service metrics of the served model.", no_args_is_help=True
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(2)


@monitor_app.command("report")
def report(
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Bundle target (default: the bundle's default).")
    ] = None,
    windows: Annotated[int, typer.Option(min=1, help="How many of the latest windows to show.")] = 5,
    granularity: Annotated[str, typer.Option(help="Window length the metrics were computed for.")] = "1 hour",
) -> None:
    """Print the latest windows' drift, quality and service metrics of TARGET and the retrain verdict."""
    try:
        granularity_length(granularity)
        bundle = load_bundle(find_bundle_root(), target)
        tables = MonitoringTables.for_bundle(bundle)
        thresholds = MonitoringThresholds.from_json(str(bundle.variables.get("monitoring_thresholds", "")))
    except (BundleError, ThresholdsError, ValueError) as error:
        raise _fail(str(error)) from None
    platform = LocalPlatform(bundle.target)
    try:
        stored = platform.read_table(
            tables.drift_metrics, produced_by=f"`mlops run monitoring -t {bundle.target}`"
        )
        metrics = metrics_frame(stored, granularity)
    except (MissingTableError, LocalStateError) as error:
        raise _fail(str(error)) from None
    finally:
        platform.stop()
    text = format_report(
        metrics, thresholds, table=tables.drift_metrics, granularity=granularity, windows=windows
    )
    typer.echo(text)
