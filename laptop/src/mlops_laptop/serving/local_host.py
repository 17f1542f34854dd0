"""The local serving host the SDK talks to: a running `mlops serve`, else one started in-process.

One control plane per state directory at a time (a file lock): `mlops serve` holds it while it
runs and writes a discovery file (URL, process, token); a deployer uses that server when it
answers, else takes the lock and serves the same persisted state in-process for its calls.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from filelock import FileLock, Timeout

from mlops_laptop.serving.app import create_app
from mlops_laptop.serving.control_plane import ControlPlane, ServingSettings
from mlops_laptop.serving.endpoint_state import control_plane_lock_path, read_discovery
from mlops_laptop.serving.server import LocalServer

log = logging.getLogger(__name__)

HOLDER_FILE = "control-plane.holder"
NO_TOKEN = "local"  # the SDK's PAT auth needs a token; a server started without one ignores it
_WAIT_FOR_LOCK_SECONDS = 600


class ControlPlaneBusyError(RuntimeError):
    """Another process serves the control plane of this state directory."""


def creator() -> str:
    """The local user, recorded as the endpoint's creator (holding CAN_MANAGE)."""
    return getpass.getuser()


def acquire_control_plane(state_dir: Path, *, wait_seconds: float = 0) -> FileLock:
    """Take the state directory's control-plane lock (release it when done), or raise
    `ControlPlaneBusyError` naming who holds it after `wait_seconds`."""
    path = control_plane_lock_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=wait_seconds)
    except Timeout:
        holder = path.with_name(HOLDER_FILE)
        who = holder.read_text().strip() if holder.is_file() else "another process"
        raise ControlPlaneBusyError(
            f"the serving control plane of {state_dir} is in use by {who}: one `mlops serve` or deploy "
            "at a time serves a target's endpoints (stop it, or let the deploy finish)"
        ) from None
    path.with_name(HOLDER_FILE).write_text(f"process {os.getpid()} ({' '.join(sys.argv)[:200]})")
    return lock


def open_control_plane(state_dir: Path, settings: ServingSettings) -> ControlPlane:
    """The control plane over the persisted endpoints; with `settings.preload` their models are
    loaded (and checked) now."""
    control_plane = ControlPlane(state_dir, settings, creator=creator())
    if settings.preload:
        control_plane.preload()
    return control_plane


@dataclass(frozen=True)
class Host:
    """A reachable local serving host."""

    url: str
    token: str

    def workspace_client(self) -> WorkspaceClient:
        """The SDK client of this host alone: PAT auth, no profile, ~/.databrickscfg or other
        `DATABRICKS_*` setting can redirect or re-authenticate it. Its HTTP session honours
        `HTTP(S)_PROXY` and `Config` has no setting to turn that off (databricks/sdk/_base_client.py
        `requests.Session()`): behind a proxy, add 127.0.0.1 to `NO_PROXY`."""
        config = Config(
            host=self.url,
            token=self.token,
            auth_type="pat",
            profile="",  # set (even empty), the profile is not read from the environment
            retry_timeout_seconds=60,
        )
        return WorkspaceClient(config=config)


def running_server(state_dir: Path) -> Host | None:
    """The `mlops serve` of this state directory: the server its discovery file names, when that
    process is alive and the server answering at the file's URL is that process (a server of another
    state directory may listen on the port after an unclean stop). The loopback call ignores
    `HTTP(S)_PROXY`."""
    found = read_discovery(state_dir)
    if found is None:
        return None
    if not _process_alive(found.pid):
        log.info("the discovery file names process %d, which is not running: ignored", found.pid)
        return None
    try:
        with requests.Session() as session:
            session.trust_env = False  # no proxy, no .netrc for the loopback call
            answer = session.get(f"{found.url}/ping", timeout=5)
        pid = answer.json().get("pid") if answer.status_code == 200 else None
    except (requests.RequestException, ValueError):
        pid = None
    if pid != found.pid:
        log.info(
            "the discovery file names %s (process %d), which does not answer as that process: ignored",
            found.url,
            found.pid,
        )
        return None
    return Host(found.url, found.token or NO_TOKEN)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def local_host(state_dir: Path) -> Iterator[Host]:
    """A running `mlops serve` of `state_dir`, else an in-process server over the same persisted
    state (its models load at their first use), stopped with its tables flushed at the end."""
    deadline = time.monotonic() + _WAIT_FOR_LOCK_SECONDS
    while (running := running_server(state_dir)) is None:
        try:
            lock = acquire_control_plane(state_dir, wait_seconds=1)
        except ControlPlaneBusyError:
            if time.monotonic() > deadline:
                raise
            continue  # `mlops serve` starting (its discovery file comes), or another deploy
        try:
            control_plane = open_control_plane(state_dir, ServingSettings(preload=False))
            with LocalServer(create_app(control_plane=control_plane)) as server:
                yield Host(server.url, NO_TOKEN)
        finally:
            lock.release()
        return
    log.info("using the endpoint server %s (mlops serve)", running.url)
    yield running
