"""The persisted state of the local serving endpoints: what the control plane answers and serves.

One JSON file per endpoint under `<state_dir>/serving/endpoints/`, replaced whole on every change:
the endpoint as the Databricks API describes it (`ServingEndpointDetailed`: served config, AI
gateway, tags, id, creator, state) and its access control list. `mlops serve` restarts into it.
Beside it: the discovery file of a running `mlops serve` and the lock that keeps one control plane
per state directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from databricks.sdk.service.serving import (
    EndpointStateConfigUpdate,
    EndpointStateReady,
    ServingEndpointAccessControlResponse,
    ServingEndpointDetailed,
)

from mlops_template.atomic_files import write_atomically

SERVING_DIR = "serving"
DISCOVERY_FILE = "server.json"
LOCK_FILE = "control-plane.lock"


def serving_dir(state_dir: Path) -> Path:
    return state_dir / SERVING_DIR


def endpoints_dir(state_dir: Path) -> Path:
    return serving_dir(state_dir) / "endpoints"


@dataclass
class EndpointRecord:
    """One endpoint as persisted: its Databricks description and its direct grants."""

    endpoint: ServingEndpointDetailed
    acl: list[ServingEndpointAccessControlResponse] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.endpoint.name)

    def to_json(self) -> str:
        return json.dumps(
            {"endpoint": self.endpoint.as_dict(), "access_control_list": [e.as_dict() for e in self.acl]},
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> EndpointRecord:
        data = json.loads(text)
        return cls(
            ServingEndpointDetailed.from_dict(data["endpoint"]),
            [ServingEndpointAccessControlResponse.from_dict(e) for e in data["access_control_list"]],
        )


def save_record(state_dir: Path, record: EndpointRecord) -> Path:
    """Persist `record`; readers never see a half-written file."""
    path = endpoints_dir(state_dir) / f"{record.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda temporary: temporary.write_text(record.to_json()))


def delete_record(state_dir: Path, name: str) -> None:
    (endpoints_dir(state_dir) / f"{name}.json").unlink(missing_ok=True)


def load_record(state_dir: Path, name: str) -> EndpointRecord | None:
    """The persisted endpoint `name` as a restarted server sees it, or None."""
    path = endpoints_dir(state_dir) / f"{name}.json"
    return _restarted(EndpointRecord.from_json(path.read_text())) if path.is_file() else None


def load_records(state_dir: Path) -> list[EndpointRecord]:
    """Every persisted endpoint, by name, as a restarted server sees them."""
    return [
        _restarted(EndpointRecord.from_json(path.read_text()))
        for path in sorted(endpoints_dir(state_dir).glob("*.json"))
    ]


def _restarted(record: EndpointRecord) -> EndpointRecord:
    """An update the server did not finish before it stopped is canceled: the served config stays."""
    endpoint = record.endpoint
    if endpoint.state and endpoint.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS:
        endpoint.state.config_update = EndpointStateConfigUpdate.UPDATE_CANCELED
        endpoint.state.ready = EndpointStateReady.READY if endpoint.config else EndpointStateReady.NOT_READY
        endpoint.pending_config = None
    return record


@dataclass(frozen=True)
class Discovery:
    """Where a running `mlops serve` listens, its process and the token it requires (if any)."""

    url: str
    pid: int
    token: str | None = None


def write_discovery(state_dir: Path, discovery: Discovery) -> Path:
    """Write the discovery file, readable by its owner only (it may hold the token)."""
    path = serving_dir(state_dir) / DISCOVERY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"url": discovery.url, "pid": discovery.pid}
    if discovery.token is not None:
        data["token"] = discovery.token

    def write(temporary: Path) -> None:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(data, file)

    return write_atomically(path, write)


def read_discovery(state_dir: Path) -> Discovery | None:
    path = serving_dir(state_dir) / DISCOVERY_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Discovery(url=data["url"], pid=int(data["pid"]), token=data.get("token"))


def remove_discovery(state_dir: Path, pid: int) -> None:
    """Remove the discovery file if it is this process's."""
    found = read_discovery(state_dir)
    if found is not None and found.pid == pid:
        (serving_dir(state_dir) / DISCOVERY_FILE).unlink(missing_ok=True)


def control_plane_lock_path(state_dir: Path) -> Path:
    return serving_dir(state_dir) / LOCK_FILE
