"""The Databricks deployer against a loopback fake of the serving-endpoints REST calls it makes.

Recorded request bodies must parse back with the SDK's own dataclasses and carry the spec's values.
The fake follows the CLI's own test server (databricks/cli libs/testserver/serving_endpoints.go):
a config update stays IN_PROGRESS until polled, and an endpoint with an update in progress refuses
another with 409 RESOURCE_CONFLICT ("An endpoint that already has an update in progress can not be
updated until the current update completes or fails": `databricks serving-endpoints update-config`
help, cmd/workspace/serving-endpoints/serving-endpoints.go).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    EndpointCoreConfigInput,
    EndpointTag,
    ServedEntityInput,
    ServingEndpointAccessControlRequest,
    ServingEndpointPermissionLevel,
    ServingEndpointPermissions,
    TrafficConfig,
)

from loopback import authenticate_to, loopback_workspace, without_query
from mlops_laptop.serving.local_deploy import LocalEndpointDeployer
from mlops_template.platform import DatabricksPlatform
from mlops_template.serving.deploy import (
    DEFAULT_READY_TIMEOUT,
    DatabricksEndpointDeployer,
    EndpointDeploymentError,
    endpoint_deployer,
)
from mlops_template.serving.spec import EndpointConfig, InferenceTableSpec, endpoint_config
from mlops_template.tasks.common import build_config
from mlops_template.tasks.deploy import DeployConfig

MODEL = "prod.ml.scorer"
_ENDPOINT_PATH = re.compile(r"^/api/2\.0/serving-endpoints/(?P<name>[^/]+)(?P<rest>/.*)?$")
_PERMISSIONS_PATH = re.compile(r"^/api/2\.0/permissions/serving-endpoints/(?P<id>[^/]+)$")
CREATOR = "deployer@example.com"


class FakeServing:
    """Serving endpoints in memory; a config change stays IN_PROGRESS for `polls_until_ready` GETs,
    during which another config update is refused with 409 RESOURCE_CONFLICT."""

    def __init__(self, *, polls_until_ready: int = 1, outcome: str = "NOT_UPDATING") -> None:
        self.polls_until_ready = polls_until_ready
        self.outcome = outcome
        self.ready: str | None = None  # set: the readiness after a settled update, whatever its outcome
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.acls: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.statuses: list[int] = []
        self.conflicts_before_update = 0  # another deployment starts an update just before ours
        self._pending: dict[str, int] = {}

    def bodies(self, method: str, suffix: str) -> list[dict[str, Any]]:
        return [body for m, path, body in self.calls if m == method and path.endswith(suffix)]

    def add_endpoint(self, name: str, *, updating: bool = False, **fields: Any) -> None:
        """An endpoint created before the test (by the creator, who holds CAN_MANAGE)."""
        self.endpoints[name] = {"name": name, "id": f"id-{name}", "tags": [], **fields}
        self.acls[f"id-{name}"] = [_grant(user_name=CREATOR, level="CAN_MANAGE")]
        if updating:
            self._pending[name] = self.polls_until_ready

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((method, path, body))
        status, answer = self._answer(method, path, body)
        self.statuses.append(status)
        return status, answer

    def _answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/api/2.0/serving-endpoints" and method == "POST":
            self.add_endpoint(body["name"], config=body["config"], tags=body.get("tags", []))
            if "ai_gateway" in body:
                self.endpoints[body["name"]]["ai_gateway"] = body["ai_gateway"]
            return self._changed(body["name"])
        if permissions := _PERMISSIONS_PATH.match(path):
            return self._permissions(method, permissions["id"], body)
        match = _ENDPOINT_PATH.match(path)
        if match is None or match["name"] not in self.endpoints:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"{path} does not exist"}
        name, rest, endpoint = match["name"], match["rest"] or "", self.endpoints[match["name"]]
        if (method, rest) == ("GET", ""):
            return 200, endpoint | {"state": self._state(name)}
        if (method, rest) == ("DELETE", ""):
            del self.endpoints[name]
            return 200, {}
        if (method, rest) == ("PUT", "/config"):
            if self.conflicts_before_update:
                self.conflicts_before_update -= 1
                self._pending[name] = self.polls_until_ready
            if self._pending.get(name, 0) > 0:
                return 409, {
                    "error_code": "RESOURCE_CONFLICT",
                    "message": f"Endpoint {name} is currently updating. Wait for the update to complete.",
                }
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

    def _permissions(self, method: str, endpoint_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """GET lists the grants; PATCH adds or changes the given ones and keeps the others."""
        if endpoint_id not in self.acls:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"no endpoint {endpoint_id}"}
        acl = self.acls[endpoint_id]
        if method == "PATCH":
            for request in body["access_control_list"]:
                principal = {k: v for k, v in request.items() if k != "permission_level"}
                acl[:] = [entry for entry in acl if {k: entry.get(k) for k in principal} != principal]
                acl.append(_grant(level=request["permission_level"], **principal))
        elif method != "GET":
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"no fake for {method} permissions"}
        return 200, {
            "object_id": f"/serving-endpoints/{endpoint_id}",
            "object_type": "serving-endpoint",
            "access_control_list": acl,
        }

    def _changed(self, name: str) -> tuple[int, dict[str, Any]]:
        self._pending[name] = self.polls_until_ready
        return 200, self.endpoints[name] | {"state": self._state(name, poll=False)}

    def _state(self, name: str, *, poll: bool = True) -> dict[str, str]:
        if self._pending.get(name, 0) > 0:
            self._pending[name] -= poll
            return {"ready": "NOT_READY", "config_update": "IN_PROGRESS"}
        return {
            "ready": self.ready or ("READY" if self.outcome == "NOT_UPDATING" else "NOT_READY"),
            "config_update": self.outcome,
        }


def _grant(*, level: str, **principal: str) -> dict[str, Any]:
    return {**principal, "all_permissions": [{"permission_level": level, "inherited": False}]}


@pytest.fixture
def fake_workspace(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[tuple[FakeServing, str]]:
    """The fake on an ephemeral loopback port; Databricks auth from the environment points at it."""
    fake = FakeServing()
    with loopback_workspace(without_query(fake.handle)) as host:
        authenticate_to(monkeypatch, host, tmp_path)
        yield fake, host


def _deployer(host: str, timeout: timedelta = timedelta(seconds=30)) -> DatabricksEndpointDeployer:
    return DatabricksEndpointDeployer(WorkspaceClient(host=host, token="dapi-test-token"), timeout=timeout)


def _config(
    *, table_enabled: bool = True, challenger: str | None = "4", prefix: str = "scores", query_group: str = ""
) -> EndpointConfig:
    return endpoint_config(
        endpoint_name="scores-prod",
        model_name=MODEL,
        champion_version="3",
        challenger_version=challenger,
        challenger_traffic_percent=10,
        workload_size="Small",
        scale_to_zero=False,
        inference_table=InferenceTableSpec(
            enabled=table_enabled, catalog_name="prod", schema_name="ml", table_name_prefix=prefix
        ),
        git_sha="0123abc",
        query_group=query_group,
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
        ("scorer-3", MODEL, "3", "Small", False),
        ("scorer-4", MODEL, "4", "Small", False),
    ]
    assert [(r.served_entity_name, r.traffic_percentage) for r in core.traffic_config.routes] == [
        ("scorer-3", 90),
        ("scorer-4", 10),
    ]
    table = AiGatewayConfig.from_dict(create["ai_gateway"]).inference_table_config
    assert table == AiGatewayInferenceTableConfig(
        catalog_name="prod", schema_name="ml", table_name_prefix="scores", enabled=True
    )
    tags = {tag.key: tag.value for tag in map(EndpointTag.from_dict, create["tags"])}
    assert tags == {
        "model_name": MODEL,
        "model_version": "3",
        "challenger_version": "4",
        "git_sha": "0123abc",
    }
    gets = [path for method, path, _ in fake.calls if method == "GET" and path.endswith("/scores-prod")]
    assert len(gets) == 1 + fake.polls_until_ready + 1  # existence check, polls in progress, ready
    assert not fake.bodies("PUT", "/ai-gateway") and not fake.bodies("PATCH", "/tags")


def test_an_existing_endpoint_gets_the_new_config_table_location_and_tags(fake_workspace):
    fake, host = fake_workspace
    fake.add_endpoint(
        "scores-prod",
        config={"served_entities": [{"name": "scorer-2", "entity_name": MODEL, "entity_version": "2"}]},
        ai_gateway={
            "inference_table_config": {
                "enabled": True,
                "catalog_name": "prod",
                "schema_name": "ml",
                "table_name_prefix": "old",
            },
            "rate_limits": [{"calls": 100, "renewal_period": "minute", "key": "user"}],
        },
        tags=[{"key": "challenger_version", "value": "2"}, {"key": "team", "value": "scores"}],
    )
    _deployer(host).deploy(_config(challenger=None))

    [update] = fake.bodies("PUT", "/config")
    assert [ServedEntityInput.from_dict(e).entity_version for e in update["served_entities"]] == ["3"]
    assert TrafficConfig.from_dict(update["traffic_config"]).routes[0].traffic_percentage == 100
    disable, enable = (AiGatewayConfig.from_dict(body) for body in fake.bodies("PUT", "/ai-gateway"))
    assert disable.inference_table_config.enabled is False
    assert enable.inference_table_config.table_name_prefix == "scores"
    assert enable.inference_table_config.enabled is True
    assert enable.rate_limits[0].calls == 100  # other gateway settings are kept
    [patch] = fake.bodies("PATCH", "/tags")
    assert patch["delete_tags"] == ["challenger_version"]
    assert {t["key"]: t["value"] for t in fake.endpoints["scores-prod"]["tags"]} == {
        "team": "scores",
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
    deployer.deploy(_config(table_enabled=False, challenger=None))
    assert "ai_gateway" not in fake.bodies("POST", "/serving-endpoints")[0]
    assert fake.bodies("PUT", "/config") and not fake.bodies("PUT", "/ai-gateway")


def test_an_endpoint_that_never_gets_ready_fails_with_a_clear_error(fake_workspace):
    fake, host = fake_workspace
    fake.polls_until_ready = 10**9
    with pytest.raises(
        EndpointDeploymentError,
        match=r"scores-prod was not ready after 0:00:00.3.*IN_PROGRESS.*previous one.*--ready-timeout-min",
    ):
        _deployer(host, timeout=timedelta(seconds=0.3)).deploy(_config())


def test_a_failed_update_says_the_previous_config_keeps_serving(fake_workspace):
    fake, host = fake_workspace
    fake.outcome = "UPDATE_FAILED"
    with pytest.raises(
        EndpointDeploymentError, match="ended UPDATE_FAILED; the endpoint keeps serving its previous"
    ):
        _deployer(host).deploy(_config())


def test_the_platform_picks_the_deployer(fake_workspace, platform):
    """The laptop platform's deployer is its package's entry point (the wheel never imports it)."""
    assert isinstance(endpoint_deployer(platform), LocalEndpointDeployer)
    assert isinstance(endpoint_deployer(DatabricksPlatform()), DatabricksEndpointDeployer)


def test_a_deploy_meeting_an_update_in_progress_waits_for_it_then_applies_its_own(fake_workspace):
    """Source: `update-config` help (an endpoint with an update in progress cannot be updated until
    it completes or fails) and the SDK waiter `wait_get_serving_endpoint_not_updating`."""
    fake, host = fake_workspace
    fake.polls_until_ready = 2
    fake.add_endpoint(
        "scores-prod",
        updating=True,
        config={"served_entities": [{"name": "scorer-2", "entity_name": MODEL, "entity_version": "2"}]},
    )
    _deployer(host).deploy(_config(challenger=None))

    assert 409 not in fake.statuses  # it waited instead of being refused
    [update] = fake.bodies("PUT", "/config")
    assert [ServedEntityInput.from_dict(e).entity_version for e in update["served_entities"]] == ["3"]
    methods = [m for m, p, _ in fake.calls if p.endswith("/scores-prod") or p.endswith("/config")]
    # existing (in progress), the waiter's polls (in progress, then done), then our update
    assert methods[:4] == ["GET", "GET", "GET", "PUT"]


def test_an_update_refused_because_another_started_is_applied_after_it(fake_workspace):
    """Source: 409 RESOURCE_CONFLICT while an update is in progress (databricks/cli
    libs/testserver/serving_endpoints.go); the SDK maps it to `errors.ResourceConflict`."""
    fake, host = fake_workspace
    fake.add_endpoint(
        "scores-prod",
        config={"served_entities": [{"name": "scorer-2", "entity_name": MODEL, "entity_version": "2"}]},
    )
    fake.conflicts_before_update = 1
    _deployer(host).deploy(_config(challenger=None))

    assert fake.statuses.count(409) == 1
    refused, applied = fake.bodies("PUT", "/config")
    assert refused == applied
    assert fake.endpoints["scores-prod"]["config"] == applied


def test_an_endpoint_already_serving_the_config_is_not_updated_again(fake_workspace):
    """The pipeline deploys after every validation: a second deploy of the same champion, challenger
    and table changes nothing (source: ServingEndpointDetailed.config, databricks/sdk/service/serving.py)."""
    fake, host = fake_workspace
    deployer = _deployer(host)
    config = _config()
    assert not deployer.serves(config)
    deployer.deploy(config)
    assert deployer.serves(config)
    assert not deployer.serves(_config(challenger="5"))
    assert not deployer.serves(_config(prefix="moved"))

    calls = len(fake.calls)
    deployer.deploy(config)
    assert [m for m, _, _ in fake.calls[calls:]] == ["GET"]  # the existence check alone: no wait, no writes


def test_a_failed_earlier_update_does_not_block_a_deploy_of_what_is_served(fake_workspace):
    """After an update ends UPDATE_FAILED the endpoint keeps serving its previous config, READY
    (EndpointStateConfigUpdate, databricks/sdk/service/serving.py): a deploy of that config (say,
    after a rollback) has nothing to wait for, and must not fail on the old update's outcome."""
    fake, host = fake_workspace
    deployer = _deployer(host)
    deployer.deploy(_config())
    fake.outcome, fake.ready = "UPDATE_FAILED", "READY"
    deployer.deploy(_config(query_group="readers"))
    assert len(fake.bodies("PUT", "/config")) == 0
    assert fake.bodies("PATCH", "/id-scores-prod")[-1]["access_control_list"][0]["group_name"] == "readers"


def test_the_query_group_gets_can_query_and_the_creator_keeps_can_manage(fake_workspace):
    """Source: ServingEndpointsAPI.update_permissions (PATCH) updates grants, set_permissions (PUT)
    replaces all direct ones (databricks/sdk/service/serving.py); levels: ServingEndpointPermissionLevel."""
    fake, host = fake_workspace
    deployer = _deployer(host)
    config = _config(query_group="score-readers")
    deployer.deploy(config)

    [patch] = fake.bodies("PATCH", "/permissions/serving-endpoints/id-scores-prod")
    assert [ServingEndpointAccessControlRequest.from_dict(e) for e in patch["access_control_list"]] == [
        ServingEndpointAccessControlRequest(
            group_name="score-readers", permission_level=ServingEndpointPermissionLevel.CAN_QUERY
        )
    ]
    assert not fake.bodies("PUT", "/permissions/serving-endpoints/id-scores-prod")
    acl = ServingEndpointPermissions.from_dict({"access_control_list": fake.acls["id-scores-prod"]})
    held = {
        (entry.user_name or entry.group_name, entry.all_permissions[0].permission_level.value)
        for entry in acl.access_control_list
    }
    assert held == {(CREATOR, "CAN_MANAGE"), ("score-readers", "CAN_QUERY")}
    assert deployer.serves(config)
    assert not deployer.serves(_config(query_group="other-readers"))
    deployer.deploy(config)
    assert len(fake.bodies("PATCH", "/permissions/serving-endpoints/id-scores-prod")) == 1


def test_the_wait_is_configurable_with_a_generous_default(fake_workspace):
    """The first CPU endpoint build can take close to 30 minutes; the CLI waits 35 (databricks/cli
    bundle/direct/dresources/model_serving_endpoint.go)."""
    assert timedelta(minutes=35) <= DEFAULT_READY_TIMEOUT
    assert endpoint_deployer(DatabricksPlatform()).timeout == DEFAULT_READY_TIMEOUT
    arguments = ["--model-name=a.b.c", "--endpoint-name=e", "--schema=a.b"]
    config = build_config(DeployConfig, arguments)
    assert config.ready_timeout_minutes == 45
    minutes = timedelta(minutes=config.ready_timeout_minutes)
    assert endpoint_deployer(DatabricksPlatform(), ready_timeout=minutes).timeout == minutes


def test_an_endpoint_is_deleted_once(fake_workspace):
    fake, host = fake_workspace
    deployer = _deployer(host)
    deployer.deploy(_config())
    assert deployer.delete("scores-prod")
    assert not deployer.delete("scores-prod")
    assert "scores-prod" not in fake.endpoints
    assert len(fake.bodies("DELETE", "/serving-endpoints/scores-prod")) == 2
