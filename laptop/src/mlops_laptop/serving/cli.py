"""`mlops serve`: serve the endpoints the pipeline recorded in a target's local state."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from mlops_laptop.serving.server import DEFAULT_PORT, LOOPBACK

log = logging.getLogger(__name__)


def serve_command(
    target: Annotated[
        str, typer.Option("--target", "-t", help="Bundle target whose local endpoints to serve.")
    ],
    host: Annotated[
        str, typer.Option(help="Address to listen on; loopback unless told otherwise.")
    ] = LOOPBACK,
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = DEFAULT_PORT,
    token_env: Annotated[
        str | None,
        typer.Option(
            help="Require 'Authorization: Bearer <token>' with the token in this environment variable."
        ),
    ] = None,
) -> None:
    """Serve TARGET's deployed endpoints (Databricks invocation API) until Ctrl-C or SIGTERM."""
    from mlops_laptop.platform.local import LocalPlatform
    from mlops_laptop.serving.app import create_app
    from mlops_laptop.serving.endpoint import Endpoint
    from mlops_laptop.serving.server import ServerStartError, bind, serve_foreground
    from mlops_template.serving.spec import ENDPOINTS_DIR, load_endpoint_specs

    token = _token(token_env)
    platform = LocalPlatform(target)
    configs = load_endpoint_specs(platform.state_dir)
    if not configs:
        typer.echo(
            f"Error: no endpoint is recorded for target {target} in {platform.state_dir / ENDPOINTS_DIR}. "
            f"Run the pipeline first (mlops run pipeline -t {target}); its deploy task records the endpoint.",
            err=True,
        )
        raise typer.Exit(2)
    platform.configure_mlflow()
    endpoints = [Endpoint.load(config, platform.state_dir) for config in configs]
    try:
        sock = bind(host, port)
    except ServerStartError as error:
        raise typer.BadParameter(str(error), param_hint="--port") from None
    bound_host, bound_port = sock.getsockname()[:2]
    if token is None and host not in (LOOPBACK, "localhost", "::1"):
        log.warning(
            "listening on %s without --token-env: anyone who can reach it can call the endpoints", host
        )
    for endpoint in endpoints:
        log.info(
            "serving http://%s:%d/serving-endpoints/%s/invocations", bound_host, bound_port, endpoint.name
        )
    try:
        serve_foreground(create_app(endpoints, token=token), sock)
    except KeyboardInterrupt:
        log.info("stopped")


def _token(variable: str | None) -> str | None:
    if variable is None:
        return None
    token = os.environ.get(variable, "")
    if not token:
        raise typer.BadParameter(
            f"environment variable {variable} is not set or empty", param_hint="--token-env"
        )
    return token
