"""`mlops doctor -t T`: one line per check, exit 1 when any fails."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops_laptop.console import console, escape
from mlops_laptop.doctor import CheckResult, Status, failed
from mlops_laptop.serving.server import DEFAULT_PORT

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


def doctor_command(
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Bundle target (default: the bundle's default).")
    ] = None,
    workspace: Annotated[
        bool,
        typer.Option(
            "--workspace",
            help="Check the Databricks workspace the SDK is configured for (default on Databricks).",
        ),
    ] = False,
    port: Annotated[int, typer.Option(help="Local serving port to check.")] = DEFAULT_PORT,
) -> None:
    """Check what TARGET needs: on this laptop, or with --workspace on a Databricks workspace."""
    from mlops_laptop.bundle.loader import BundleError, find_bundle_root, read_config, select_target
    from mlops_template.platform.databricks import on_databricks

    try:
        root = find_bundle_root()
        name = select_target(read_config(root), target)[0]
    except BundleError as error:
        console().print(f"[bold red]Error:[/] {escape(str(error))}")
        raise typer.Exit(2) from None
    if workspace or on_databricks():
        from mlops_laptop.doctor.workspace import workspace_checks

        results = workspace_checks(root, name)
    else:
        from mlops_laptop.doctor.local import LocalContext, local_checks
        from mlops_laptop.platform.local import LocalPlatform

        results = local_checks(LocalContext(root, name, LocalPlatform(name).state_dir, port))
    for result in results:
        console().print(_line(result), soft_wrap=True)
    counts = {status: sum(r.status is status for r in results) for status in Status}
    console().print(", ".join(f"{count} {status}" for status, count in counts.items()))
    if failed(results):
        raise typer.Exit(1)


def _line(result: CheckResult) -> str:
    style = _STYLE[result.status]
    line = f"[{style}]{result.status.value:<4}[/] {escape(result.name):<18} {escape(result.detail)}"
    return line + (f"\n{'':<24}fix: {escape(result.fix)}" if result.fix else "")
