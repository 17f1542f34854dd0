"""The Databricks deployer against a loopback fake of the serving-endpoints REST calls it makes.

Recorded request bodies must parse back with the SDK's own dataclasses and carry the spec's values.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    EndpointCoreConfigInput,
    EndpointTag,
    ServedEntityInput,
    TrafficConfig,
)

from mlops_template.platform import DatabricksPlatform
from mlops_template.serving.deploy import DatabricksEndpointDeployer, EndpointDeploymentError
from mlops_template.serving.local_deploy import LocalEndpointDeployer
from mlops_template.serving.spec import EndpointConfig, InferenceTableSpec, endpoint_config

MODEL = "prod.taxi.fare_model"
_ENDPOINT_PATH = re.compile(r"^/api/2\.0/serving-endpoints/(?P<name>[^/]+)(?P<rest>/.*)?$")


class FakeServing:
    """Serving endpoints in memory; an endpoint becomes READY after `polls_until_ready` GETs."""

    def __init__(self, *, polls_until_ready: int = 2, outcome: str = "NOT_UPDATING") -> None:
        self.polls_until_ready = polls_until_ready
        self.outcome = outcome
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self._pending: dict[str, int] = {}

    def bodies(self, method: str, suffix: str) -> list[dict[str, Any]]:
        return [body for m, path, body in self.calls if m == method and path.endswith(suffix)]

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((method, path, body))
        if path == "/api/2.0/serving-endpoints" and method == "POST":
            endpoint = {"name": body["name"], "config": body["config"], "tags": body.get("tags", [])}
            if "ai_gateway" in body:
                endpoint["ai_gateway"] = body["ai_gateway"]
            self.endpoints[body["name"]] = endpoint
            return self._changed(body["name"])
        match = _ENDPOINT_PATH.match(path)
        if match is None or match["name"] not in self.endpoints:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{path} does not exist"}
        name, rest, endpoint = match["name"], match["rest"] or "", self.endpoints[match["name"]]
        if (method, rest) == ("GET", ""):
            return 200, endpoint | {"state": self._state(name)}
        if (method, rest) == ("PUT", "/config"):
            endpoint["config"] = body
            return self._changed(name)
        if (method, rest) == ("PUT", "/ai-gateway"):
            endpoint["ai_gateway"] = body
            return 200, body
        if (method, rest) == ("PATCH", "/tags"):
            tags = {t["key"]: t for t in endpoint["tags"] if t["key"] not in body.get("delete_tags", [])}
            endpoint["tags"] = list((tags | {t["key"]: t for t in body.get("add_tags", [])}).values())
            return 200, {"tags": endpoint["tags"]}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no fake for {method} {path}"}

    def _changed(self, name: str) -> tuple[int, dict[str, Any]]:
        self._pending[name] = self.polls_until_ready
        return 200, self.endpoints[name] | {"state": self._state(name, poll=False)}

    def _state(self, name: str, *, poll: bool = True) -> dict[str, str]:
        if self._pending.get(name, 0) > 0:
            self._pending[name] -= poll
            return {"ready": "NOT_READY", "config_update": "IN_PROGRESS"}
        return {
            "ready": "READY" if self.outcome == "NOT_UPDATING" else "NOT_READY",
            "config_update": self.outcome,
        }


def _handler(fake: FakeServing) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            status, answer = fake.handle(self.command, self.path.split("?")[0], body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_workspace(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[tuple[FakeServing, str]]:
    """The fake on an ephemeral loopback port; Databricks auth from the environment points at it."""
    fake = FakeServing()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    for variable in [v for v in os.environ if v.startswith("DATABRICKS_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-test-token")
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no.databrickscfg"))
    yield fake, host
    server.shutdown()
    server.server_close()


def _deployer(host: str, **settings: Any) -> DatabricksEndpointDeployer:
    options = {"timeout": timedelta(seconds=10), "poll_seconds": 0.01} | settings
    return DatabricksEndpointDeployer(WorkspaceClient(host=host, token="dapi-test-token"), **options)


def _config(
    *, table_enabled: bool = True, challenger: str | None = "4", prefix: str = "fares"
) -> EndpointConfig:
    return endpoint_config(
        endpoint_name="fares-prod",
        model_name=MODEL,
        champion_version="3",
        challenger_version=challenger,
        challenger_traffic_percent=10,
        workload_size="Small",
        scale_to_zero=False,
        inference_table=InferenceTableSpec(
            enabled=table_enabled, catalog_name="prod", schema_name="taxi", table_name_prefix=prefix
        ),
        git_sha="0123abc",
    )


def test_a_missing_endpoint_is_created_with_gateway_and_tags_then_awaited(fake_workspace):
    fake, host = fake_workspace
    _deployer(host).deploy(_config())

    [create] = fake.bodies("POST", "/serving-endpoints")
    core = EndpointCoreConfigInput.from_dict(create["config"])
    assert [
        (e.name, e.entity_name, e.entity_version, e.workload_size, e.scale_to_zero_enabled)
        for e in core.served_entities
    ] == [
        ("fare_model-3", MODEL, "3", "Small", False),
        ("fare_model-4", MODEL, "4", "Small", False),
    ]
    assert [(r.served_entity_name, r.traffic_percentage) for r in core.traffic_config.routes] == [
        ("fare_model-3", 90),
        ("fare_model-4", 10),
    ]
    table = AiGatewayConfig.from_dict(create["ai_gateway"]).inference_table_config
    assert table == AiGatewayInferenceTableConfig(
        catalog_name="prod", schema_name="taxi", table_name_prefix="fares", enabled=True
    )
    tags = {tag.key: tag.value for tag in map(EndpointTag.from_dict, create["tags"])}
    assert tags == {
        "model_name": MODEL,
        "model_version": "3",
        "challenger_version": "4",
        "git_sha": "0123abc",
    }
    gets = [path for method, path, _ in fake.calls if method == "GET" and path.endswith("/fares-prod")]
    assert len(gets) == 1 + fake.polls_until_ready + 1  # existence check, polls in progress, ready
    assert not fake.bodies("PUT", "/ai-gateway") and not fake.bodies("PATCH", "/tags")


def test_an_existing_endpoint_gets_the_new_config_table_location_and_tags(fake_workspace):
    fake, host = fake_workspace
    fake.endpoints["fares-prod"] = {
        "name": "fares-prod",
        "config": {
            "served_entities": [{"name": "fare_model-2", "entity_name": MODEL, "entity_version": "2"}]
        },
        "ai_gateway": {
            "inference_table_config": {
                "enabled": True,
                "catalog_name": "prod",
                "schema_name": "taxi",
                "table_name_prefix": "old",
            },
            "rate_limits": [{"calls": 100, "renewal_period": "minute", "key": "user"}],
        },
        "tags": [{"key": "challenger_version", "value": "2"}, {"key": "team", "value": "fares"}],
    }
    _deployer(host).deploy(_config(challenger=None))

    [update] = fake.bodies("PUT", "/config")
    assert [ServedEntityInput.from_dict(e).entity_version for e in update["served_entities"]] == ["3"]
    assert TrafficConfig.from_dict(update["traffic_config"]).routes[0].traffic_percentage == 100
    disable, enable = (AiGatewayConfig.from_dict(body) for body in fake.bodies("PUT", "/ai-gateway"))
    assert disable.inference_table_config.enabled is False
    assert enable.inference_table_config.table_name_prefix == "fares"
    assert enable.inference_table_config.enabled is True
    assert enable.rate_limits[0].calls == 100  # other gateway settings are kept
    [patch] = fake.bodies("PATCH", "/tags")
    assert patch["delete_tags"] == ["challenger_version"]
    assert {t["key"]: t["value"] for t in fake.endpoints["fares-prod"]["tags"]} == {
        "team": "fares",
        "model_name": MODEL,
        "model_version": "3",
        "git_sha": "0123abc",
    }
    order = [(m, p.rsplit("/", 1)[-1]) for m, p, _ in fake.calls if m != "GET"]
    assert order == [("PUT", "config"), ("PUT", "ai-gateway"), ("PUT", "ai-gateway"), ("PATCH", "tags")]


def test_a_disabled_inference_table_never_calls_the_gateway_api(fake_workspace):
    fake, host = fake_workspace
    deployer = _deployer(host)
    deployer.deploy(_config(table_enabled=False))
    deployer.deploy(_config(table_enabled=False))
    assert "ai_gateway" not in fake.bodies("POST", "/serving-endpoints")[0]
    assert fake.bodies("PUT", "/config") and not fake.bodies("PUT", "/ai-gateway")


def test_an_endpoint_that_never_gets_ready_fails_with_a_clear_error(fake_workspace):
    fake, host = fake_workspace
    fake.polls_until_ready = 10**9
    with pytest.raises(
        EndpointDeploymentError, match=r"fares-prod was not ready after 0:00:00.3.*IN_PROGRESS.*previous one"
    ):
        _deployer(host, timeout=timedelta(seconds=0.3), poll_seconds=0.05).deploy(_config())


def test_a_failed_update_says_the_previous_config_keeps_serving(fake_workspace):
    fake, host = fake_workspace
    fake.outcome = "UPDATE_FAILED"
    with pytest.raises(
        EndpointDeploymentError, match="ended UPDATE_FAILED; the endpoint keeps serving its previous"
    ):
        _deployer(host).deploy(_config())


def test_the_platform_picks_the_deployer(fake_workspace, platform):
    assert isinstance(platform.endpoint_deployer(), LocalEndpointDeployer)
    assert isinstance(DatabricksPlatform().endpoint_deployer(), DatabricksEndpointDeployer)
