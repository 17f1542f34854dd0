"""`mlops monitor` reads a target's monitoring results locally; `mlops simulate-traffic` feeds them."""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from typing import Annotated

import typer

from mlops_laptop.platform import DEFAULT_SAMPLE_ROWS
from mlops_laptop.serving.server import DEFAULT_PORT, LOOPBACK

log = logging.getLogger(__name__)

MAX_REQUESTS = 10_000
DEFAULT_URL = f"http://{LOOPBACK}:{DEFAULT_PORT}"

monitor_app = typer.Typer(
    help="Drift, quality and service metrics of the served model.",
    no_args_is_help=True,
    rich_markup_mode=None,
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
    from mlops_laptop.bundle.loader import BundleError, find_bundle_root, load_bundle
    from mlops_laptop.platform.local import LocalPlatform, LocalStateError
    from mlops_template.monitoring.config import MonitoringThresholds, ThresholdsError
    from mlops_template.monitoring.metrics import metrics_frame
    from mlops_template.monitoring.report import format_report
    from mlops_template.monitoring.tables import MonitoringTables, granularity_length
    from mlops_template.platform import MissingTableError
    from mlops_template.problem_spec import ProblemSpecError, load_problem

    try:
        granularity_length(granularity)
        bundle = load_bundle(find_bundle_root(), target)
        tables = MonitoringTables(
            catalog=str(bundle.variables["catalog"]),
            schema=str(bundle.resources["schemas"]["pipeline_schema"]["name"]),
            prefix=str(bundle.variables["inference_table_prefix"]),
        )
        spec = load_problem()
        thresholds = MonitoringThresholds.from_json(
            str(bundle.variables.get("monitoring_thresholds", "")), spec
        )
    except (BundleError, ProblemSpecError, ThresholdsError, ValueError) as error:
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
        metrics, thresholds, spec, table=tables.drift_metrics, granularity=granularity, windows=windows
    )
    typer.echo(text)


def simulate_traffic(
    target: Annotated[
        str, typer.Option("--target", "-t", help="Bundle target whose local endpoint to call.")
    ],
    requests: Annotated[int, typer.Option(min=1, max=MAX_REQUESTS, help="Number of requests.")] = 200,
    drift: Annotated[
        bool, typer.Option(help="Change the inputs as the problem spec's drift_inputs does.")
    ] = False,
    url: Annotated[str, typer.Option(help="Base URL of `mlops serve` (loopback only).")] = DEFAULT_URL,
    endpoint: Annotated[str | None, typer.Option(help="Endpoint name (default: the only one).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed choosing the rows (default: random).")] = None,
    population: Annotated[
        int, typer.Option(min=100, help="Held-out rows generated: the size of the pipeline's source.")
    ] = DEFAULT_SAMPLE_ROWS,
    token_env: Annotated[
        str | None, typer.Option(help="Send 'Authorization: Bearer' with the token in this variable.")
    ] = None,
    challenger_error_scale: Annotated[
        float,
        typer.Option(
            help="Scale the challenger's live error in the labels written: 1 the truth, below 1 better, "
            "above 1 worse (needs a running experiment of the bundle's model; champion rows keep the truth)."
        ),
    ] = 1.0,
) -> None:
    """Send held-out rows to TARGET's local endpoint and record their labels as ground truth."""
    import numpy as np

    from mlops_laptop.monitoring.ground_truth import ground_truth_dir, write_ground_truth
    from mlops_laptop.monitoring.simulate import (
        VARIANT,
        TrafficError,
        answered_rows,
        check_error_scale,
        check_loopback,
        error_summary,
        experiment_variants,
        find_endpoint,
        load_held_out,
        plan_traffic,
        scaled_labels,
        send_traffic,
    )
    from mlops_laptop.platform.local import LocalPlatform
    from mlops_template.monitoring.tables import MonitoringTables
    from mlops_template.monitoring.unpack import PREDICTION
    from mlops_template.problem_spec import load_problem

    token = os.environ.get(token_env, "") if token_env else None
    if token_env and not token:
        raise typer.BadParameter(
            f"environment variable {token_env} is not set or empty", param_hint="--token-env"
        )
    spec = load_problem()
    state_dir = LocalPlatform(target).state_dir  # its state directory only: no Spark, no metastore
    try:
        scale = check_error_scale(challenger_error_scale)
        base = check_loopback(url)
        deployed = find_endpoint(state_dir, endpoint)
        variants = experiment_variants(deployed) if scale != 1 else {}
    except TrafficError as error:
        raise typer.BadParameter(str(error)) from None
    name = str(deployed.name)
    table = deployed.ai_gateway.inference_table_config if deployed.ai_gateway else None
    if table is None or not table.enabled:
        raise typer.BadParameter(
            f"endpoint {name} logs no inference table, so its traffic cannot be monitored: "
            "deploy it with --var inference_table_enabled=true"
        )
    rows = load_held_out(state_dir, spec, population)
    run_id = f"sim-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(seed)
    try:
        plan = plan_traffic(rows, requests, rng, spec, drift=drift, run_id=run_id)
        answers = send_traffic(base, name, plan, spec, token)
        sent = answered_rows(plan, answers, variants, spec)
    except TrafficError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    written = scaled_labels(sent[spec.label], sent[PREDICTION], sent[VARIANT], scale, spec, rng)
    ground_truth = MonitoringTables(
        str(table.catalog_name), str(table.schema_name), str(table.table_name_prefix)
    ).ground_truth
    labels = sent[[spec.row_id]].assign(**{spec.label: written})
    write_ground_truth(ground_truth_dir(state_dir, ground_truth), labels, spec.row_id, spec.label)
    statuses = Counter(answer.status for answer in answers)
    answered = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    scaled = f" (challenger error scaled by {scale:g})" if scale != 1 else ""
    typer.echo(
        f"Sent {len(plan)} requests ({len(labels)} rows{', drifted' if drift else ''}) to {name} "
        f"as {run_id}: {answered}. Labels ({spec.label}){scaled} written to {ground_truth}. "
        f"Per variant: {error_summary(sent, written, spec.label)}."
    )
