"""Run the endpoint app with uvicorn: in a background thread (deployer, tests) or in the foreground."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    import uvicorn
    from starlette.applications import Starlette

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8080  # `mlops serve --port`'s default
_GRACEFUL_SHUTDOWN_SECONDS = 10


class ServerStartError(RuntimeError):
    """The endpoint server could not start (port taken, app startup failed)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: an ephemeral one), or a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that name it (else Nagle adds ~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = "is already in use; choose another --port" if error.errno == errno.EADDRINUSE else str(error)
        raise ServerStartError(f"cannot listen on {host}:{port}: the address {reason}") from None
    sock.listen(2048)
    return sock


def _config(app: Starlette) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )


def serve_foreground(app: Starlette, sock: socket.socket) -> None:
    """Serve until SIGINT / SIGTERM; the app's shutdown (inference-table flush) runs before return."""
    import uvicorn

    server = uvicorn.Server(_config(app))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise ServerStartError("the endpoint server did not start; see the errors above")


class LocalServer:
    """The app served by uvicorn from a background thread on a loopback port (ephemeral by default)."""

    def __init__(
        self, app: Starlette, *, host: str = LOOPBACK, port: int = 0, startup_timeout: float = 60
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        """Start serving; returns the base URL once the app's startup has completed."""
        import uvicorn

        sock = bind(self._host, self._port)
        host, port = sock.getsockname()[:2]
        self._server = uvicorn.Server(_config(self._app))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"endpoint-{port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise ServerStartError(f"the endpoint server on {host}:{port} did not start")
            time.sleep(0.01)
        self.url = f"http://{host}:{port}"
        log.info("local endpoint server listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        """Shut down gracefully: finish requests, flush the inference tables, close the port."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
