"""`mlops serve`: serve a target's endpoints and their control plane from its local state."""

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
    """Serve TARGET's endpoints (Databricks invocation and serving-endpoints APIs) until Ctrl-C or
    SIGTERM; deploys while it runs change what it serves without a restart."""
    from mlops_laptop.platform.local import LocalPlatform
    from mlops_laptop.serving.app import create_app
    from mlops_laptop.serving.control_plane import ServingSettings
    from mlops_laptop.serving.endpoint_state import Discovery
    from mlops_laptop.serving.local_host import (
        ControlPlaneBusyError,
        acquire_control_plane,
        open_control_plane,
    )
    from mlops_laptop.serving.server import ServerStartError, bind, serve_foreground

    token = _token(token_env)
    platform = LocalPlatform(target)
    try:
        lock = acquire_control_plane(platform.state_dir)
    except ControlPlaneBusyError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        platform.configure_mlflow()
        control_plane = open_control_plane(platform.state_dir, ServingSettings(preload=True))
        try:
            sock = bind(host, port)
        except ServerStartError as error:
            raise typer.BadParameter(str(error), param_hint="--port") from None
        bound_host, bound_port = sock.getsockname()[:2]
        if token is None and host not in (LOOPBACK, "localhost", "::1"):
            log.warning(
                "listening on %s without --token-env: anyone who can reach it can call the endpoints", host
            )
        url = f"http://{_reachable(bound_host)}:{bound_port}"
        if not control_plane.names:
            typer.echo(
                f"No endpoint is deployed for target {target} yet: serving the control plane, which "
                f"takes the deploy (mlops run pipeline -t {target}) at {url}.",
                err=True,
            )
        for name in control_plane.names:
            log.info("serving %s/serving-endpoints/%s/invocations", url, name)
        # uvicorn re-raises SIGTERM once the app has shut down: the control plane removes its
        # discovery file then, and the lock goes with the process.
        control_plane.discovery = Discovery(url=url, pid=os.getpid(), token=token)
        try:
            serve_foreground(create_app(token=token, control_plane=control_plane), sock)
        except KeyboardInterrupt:
            log.info("stopped")
    finally:
        lock.release()


def _reachable(host: str) -> str:
    """The address a local client reaches the server at (loopback for a wildcard address)."""
    if host in ("0.0.0.0", ""):
        return LOOPBACK
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _token(variable: str | None) -> str | None:
    if variable is None:
        return None
    token = os.environ.get(variable, "")
    if not token:
        raise typer.BadParameter(
            f"environment variable {variable} is not set or empty", param_hint="--token-env"
        )
    return token
