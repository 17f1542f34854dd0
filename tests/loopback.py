"""A loopback HTTP server for the fakes of the few Databricks REST calls the project makes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# (method, path with its query string, JSON body or {}) -> (status, JSON answer[, extra headers])
Handle = Callable[
    [str, str, dict[str, Any]], tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], dict[str, str]]
]


@contextmanager
def loopback_workspace(handle: Handle) -> Iterator[str]:
    """Serve `handle` on an ephemeral loopback port; yields the server's URL."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            status, answer, *headers = handle(self.command, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in (headers[0] if headers else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def without_query(handle: Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]) -> Handle:
    """`handle` called with the request path stripped of its query string."""
    return lambda method, path, body: handle(method, path.split("?")[0], body)


def authenticate_to(monkeypatch: pytest.MonkeyPatch, host: str, home: Path) -> None:
    """Databricks auth from the environment alone, pointing at `host` (no config file, no other variable)."""
    for variable in [v for v in os.environ if v.startswith("DATABRICKS_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-test-token")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(home / "no.databrickscfg"))
