"""The local serving control plane: the Databricks serving-endpoints REST API the SDK deployer calls,
served beside the invocations, with zero-downtime config updates and state that survives restarts.

Sources: `ServingEndpointsAPI` (databricks/sdk/service/serving.py: paths, methods, bodies, the
waiter `wait_get_serving_endpoint_not_updating` polling `state.config_update` until NOT_UPDATING and
failing on UPDATE_FAILED / UPDATE_CANCELED); `update_config`: "An endpoint that already has an
update in progress can not be updated until the current update completes or fails" (409
RESOURCE_CONFLICT, databricks/cli libs/testserver/serving_endpoints.go); `update_permissions` (PATCH)
adds grants while `set_permissions` (PUT) replaces them; Databricks keeps serving the previous config
until the new one is ready ("Update an existing model serving endpoint": the existing configuration
keeps serving until the update completes, docs.databricks.com/aws/en/machine-learning/model-serving/
manage-serving-endpoints).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    InvalidParameterValue,
    NotFound,
    OperationFailed,
    ResourceAlreadyExists,
    ResourceConflict,
)
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    AiGatewayInferenceTableConfig,
    AutoCaptureConfigInput,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    EndpointTag,
    Route,
    ServedEntityInput,
    ServedModelInput,
    ServedModelStateDeployment,
    ServingEndpointAccessControlRequest,
    ServingEndpointPermissionLevel,
    ServingModelWorkloadType,
    TrafficConfig,
)

from mlops_laptop.platform.warehouse import local_table_dir
from mlops_laptop.serving.app import create_app
from mlops_laptop.serving.control_plane import API, ServingSettings
from mlops_laptop.serving.endpoint_state import Discovery, endpoints_dir, read_discovery, write_discovery
from mlops_laptop.serving.local_deploy import deployed_endpoint
from mlops_laptop.serving.local_host import Host, creator, open_control_plane, running_server
from mlops_laptop.serving.server import LocalServer
from mlops_template.serving.deploy import endpoint_deployer
from test_serving_support import (
    LocalWorkspace,
    local_workspace,
    logged_endpoint,
    model_inputs,
    records_body,
    register_regression_model,
)

MODEL = "test.serving_cp.scorer"
SERVE = "import typer; from mlops_laptop.serving.cli import serve_command; typer.run(serve_command)"
WAIT = timedelta(seconds=60)


@pytest.fixture(scope="module")
def versions(platform) -> tuple[str, str]:
    """Two versions of a small regression (slope 2, then 3)."""
    platform.configure_mlflow()
    return (
        register_regression_model(platform, MODEL, slope=2.0),
        register_regression_model(platform, MODEL, slope=3.0),
    )


def _entity(version: str, name: str | None = None) -> ServedEntityInput:
    return ServedEntityInput(
        name=name or f"scorer-{version}", entity_name=MODEL, entity_version=version, workload_size="Small"
    )


def _core(version: str) -> EndpointCoreConfigInput:
    return EndpointCoreConfigInput(name="ignored", served_entities=[_entity(version)])


def _routes(*shares: tuple[str, int]) -> TrafficConfig:
    return TrafficConfig(routes=[Route(served_entity_name=name, traffic_percentage=p) for name, p in shares])


@pytest.fixture
def workspace(versions, tmp_path) -> Iterator[LocalWorkspace]:
    with local_workspace(tmp_path / "state") as local:
        yield local


def _create(client: WorkspaceClient, name: str, version: str = "1", **extra) -> None:
    client.serving_endpoints.create(
        name=name, config=EndpointCoreConfigInput(name=name, served_entities=[_entity(version)]), **extra
    )
    client.serving_endpoints.wait_get_serving_endpoint_not_updating(name, timeout=WAIT)


def _query(url: str, name: str) -> requests.Response:
    return requests.post(
        f"{url}/serving-endpoints/{name}/invocations", json=records_body(model_inputs(2)), timeout=60
    )


def test_create_answers_in_progress_then_the_waiter_sees_it_ready(workspace):
    """`create` answers at once with the pending config; `wait_get_serving_endpoint_not_updating`
    polls `get` until NOT_UPDATING. Creating the same name again is 409 RESOURCE_ALREADY_EXISTS."""
    endpoints = workspace.client.serving_endpoints
    created = endpoints.create(
        name="cp-create",
        config=EndpointCoreConfigInput(name="cp-create", served_entities=[_entity("1")]),
        tags=[EndpointTag(key="team", value="scores")],
    ).response
    assert created.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS
    assert created.state.ready == EndpointStateReady.NOT_READY
    assert [e.name for e in created.pending_config.served_entities] == ["scorer-1"]
    assert created.config is None and created.creator == creator() and len(created.id) == 32

    ready = endpoints.wait_get_serving_endpoint_not_updating("cp-create", timeout=WAIT)
    assert ready.state.ready == EndpointStateReady.READY and ready.pending_config is None
    [entity] = ready.config.served_entities
    assert (entity.name, entity.entity_name, entity.entity_version) == ("scorer-1", MODEL, "1")
    assert entity.state.deployment == ServedModelStateDeployment.DEPLOYMENT_READY
    assert [(r.served_entity_name, r.traffic_percentage) for r in ready.config.traffic_config.routes] == [
        ("scorer-1", 100)
    ]
    assert [(t.key, t.value) for t in ready.tags] == [("team", "scores")]
    assert [e.name for e in endpoints.list()] == ["cp-create"]
    response = _query(workspace.url, "cp-create")
    assert response.status_code == 200 and response.headers["served-model-name"] == "scorer-1"
    with pytest.raises(ResourceAlreadyExists, match="already exists"):
        endpoints.create(name="cp-create", config=_core("1"))


def test_refusals_are_databricks_errors(workspace):
    """Unknown endpoints are 404 RESOURCE_DOES_NOT_EXIST; a config whose routes do not name each
    served entity once or do not sum to 100 (`TrafficConfig`), or a bad endpoint name
    (`CreateServingEndpoint.name`), is 400 INVALID_PARAMETER_VALUE; nothing is changed by a refusal."""
    endpoints = workspace.client.serving_endpoints
    with pytest.raises(NotFound, match="does not exist"):
        endpoints.get("cp-missing")
    with pytest.raises(NotFound):
        endpoints.update_config("cp-missing", served_entities=[_entity("1")])
    with pytest.raises(InvalidParameterValue, match="name"):
        endpoints.create(name="bad name!", config=_core("1"))
    _create(workspace.client, "cp-refusals")
    bad_configs = [
        ([_entity("1"), _entity("2")], _routes(("scorer-1", 60), ("scorer-2", 30)), "sum to 100"),
        ([_entity("1"), _entity("2")], _routes(("scorer-1", 100)), "exactly once"),
        ([_entity("1"), _entity("2")], _routes(("scorer-1", 50), ("other", 50)), "names no served entity"),
        ([_entity("1"), _entity("2", name="scorer-1")], None, "unique"),
        ([ServedEntityInput(entity_name=MODEL)], None, "entity_version"),
        ([_entity("1"), _entity("2")], None, "traffic_config"),
    ]
    for entities, traffic, message in bad_configs:
        with pytest.raises(InvalidParameterValue, match=message):
            endpoints.update_config("cp-refusals", served_entities=entities, traffic_config=traffic)
    answer = requests.put(
        f"{workspace.url}/api/2.0/serving-endpoints/cp-refusals/config", data="{not json", timeout=10
    )
    assert (answer.status_code, answer.json()["error_code"]) == (400, "MALFORMED_REQUEST")
    assert endpoints.get("cp-refusals").config.config_version == 1


def test_an_update_serves_both_versions_by_route_and_a_second_update_meanwhile_is_refused(workspace):
    """`update_config` answers IN_PROGRESS with the pending config while the old config serves; an
    update while one is in progress is 409 RESOURCE_CONFLICT (SDK `ResourceConflict`)."""
    endpoints = workspace.client.serving_endpoints
    _create(workspace.client, "cp-update")
    pending = endpoints.update_config(
        "cp-update",
        served_entities=[_entity("1"), _entity("2")],
        traffic_config=_routes(("scorer-1", 50), ("scorer-2", 50)),
    ).response
    assert pending.state.config_update == EndpointStateConfigUpdate.IN_PROGRESS
    assert pending.state.ready == EndpointStateReady.READY  # the old config serves meanwhile
    assert [e.entity_version for e in pending.pending_config.served_entities] == ["1", "2"]
    assert [e.entity_version for e in pending.config.served_entities] == ["1"]
    with pytest.raises(ResourceConflict, match="currently updating"):
        endpoints.update_config("cp-update", served_entities=[_entity("2")])
    done = endpoints.wait_get_serving_endpoint_not_updating("cp-update", timeout=WAIT)
    assert done.config.config_version == 2
    served = {_query(workspace.url, "cp-update").headers["served-model-name"] for _ in range(40)}
    assert served == {"scorer-1", "scorer-2"}


def test_an_update_to_a_missing_version_fails_and_the_old_config_keeps_serving(workspace):
    """The update ends UPDATE_FAILED (the waiter raises `OperationFailed`), the previous config still
    answers, and the reason is in the failed pending config's served entity state."""
    endpoints = workspace.client.serving_endpoints
    _create(workspace.client, "cp-failed")
    endpoints.update_config("cp-failed", served_entities=[_entity("99")])
    with pytest.raises(OperationFailed, match="UPDATE_FAILED"):
        endpoints.wait_get_serving_endpoint_not_updating("cp-failed", timeout=WAIT)
    failed = endpoints.get("cp-failed")
    assert failed.state.ready == EndpointStateReady.READY
    assert [e.entity_version for e in failed.config.served_entities] == ["1"]
    [entity] = failed.pending_config.served_entities
    assert entity.state.deployment == ServedModelStateDeployment.DEPLOYMENT_FAILED
    assert "99" in entity.state.deployment_state_message
    response = _query(workspace.url, "cp-failed")
    assert response.status_code == 200 and response.headers["served-model-name"] == "scorer-1"
    endpoints.update_config("cp-failed", served_entities=[_entity("2")])  # a failed update blocks nothing
    assert (
        endpoints.wait_get_serving_endpoint_not_updating("cp-failed", timeout=WAIT).config.config_version == 2
    )


def test_gateway_tags_permissions_and_delete_and_a_restart_keeps_them(workspace):
    """`put_ai_gateway` sets the inference table (moving an enabled one is refused: disable first),
    `patch` adds and deletes tags, `update_permissions` (PATCH) adds a grant and keeps the creator's
    CAN_MANAGE; all of it is persisted, so a restarted server answers the same; `delete` removes it."""
    endpoints = workspace.client.serving_endpoints
    _create(workspace.client, "cp-settings", tags=[EndpointTag(key="stale", value="x")])
    table = AiGatewayInferenceTableConfig(
        enabled=True, catalog_name="test", schema_name="serving_cp", table_name_prefix="settings"
    )
    assert (
        endpoints.put_ai_gateway("cp-settings", inference_table_config=table).inference_table_config == table
    )
    moved = AiGatewayInferenceTableConfig(
        enabled=True, catalog_name="test", schema_name="serving_cp", table_name_prefix="moved"
    )
    with pytest.raises(InvalidParameterValue, match="disable it"):
        endpoints.put_ai_gateway("cp-settings", inference_table_config=moved)
    tags = endpoints.patch(
        "cp-settings", add_tags=[EndpointTag(key="team", value="a")], delete_tags=["stale"]
    )
    assert [(t.key, t.value) for t in tags.tags] == [("team", "a")]
    endpoint = endpoints.get("cp-settings")
    granted = endpoints.update_permissions(
        endpoint.id,
        access_control_list=[
            ServingEndpointAccessControlRequest(
                group_name="readers", permission_level=ServingEndpointPermissionLevel.CAN_QUERY
            )
        ],
    )
    held = {
        (e.user_name or e.group_name, e.all_permissions[0].permission_level.value)
        for e in granted.access_control_list
    }
    assert held == {(creator(), "CAN_MANAGE"), ("readers", "CAN_QUERY")}
    answer = requests.patch(
        f"{workspace.url}/api/2.0/permissions/serving-endpoints/{endpoint.id}",
        json={"access_control_list": [{"group_name": "readers"}]},
        timeout=10,
    )
    assert (answer.status_code, answer.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert _query(workspace.url, "cp-settings").status_code == 200

    with local_workspace(workspace.state_dir) as restarted:
        again = restarted.client.serving_endpoints
        assert again.get("cp-settings").as_dict() == endpoints.get("cp-settings").as_dict()
        assert again.get_permissions(endpoint.id) == endpoints.get_permissions(endpoint.id)
        assert _query(restarted.url, "cp-settings").headers["served-model-name"] == "scorer-1"
        again.delete("cp-settings")
        with pytest.raises(NotFound):
            again.get("cp-settings")
        with pytest.raises(NotFound):
            again.delete("cp-settings")
        assert _query(restarted.url, "cp-settings").status_code == 404
    with local_workspace(workspace.state_dir) as after_delete:
        assert list(after_delete.client.serving_endpoints.list()) == []


class Load:
    """Bounded load: `clients` threads each sending one request after the other until stopped;
    each answer is (client, sent, received, status, served-model-name)."""

    def __init__(self, url: str, endpoint: str, headers: dict[str, str], clients: int = 4) -> None:
        self.url, self.endpoint, self.headers = url, endpoint, headers
        self.answers: list[tuple[int, float, float, int, str | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(client,)) for client in range(clients)]

    def _run(self, client: int) -> None:
        body = records_body(model_inputs(2, seed=3))
        with requests.Session() as session:
            while not self._stop.is_set():
                sent = time.monotonic()
                response = session.post(
                    f"{self.url}/serving-endpoints/{self.endpoint}/invocations",
                    json=body,
                    headers=self.headers,
                    timeout=60,
                )
                served = response.headers.get("served-model-name")
                self.answers.append((client, sent, time.monotonic(), response.status_code, served))

    def served_by_client(self) -> list[list[str | None]]:
        """Each client's served-model-name headers, in the order it sent its requests."""
        clients = sorted({client for client, *_ in self.answers})
        return [[served for c, *_, served in self.answers if c == client] for client in clients]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _start_serve(platform, log_path: Path, port: int, *extra: str) -> subprocess.Popen:
    env = os.environ | {"MLOPS_HOME": str(platform.state_dir.parent)}
    command = [sys.executable, "-c", SERVE, "-t", platform.target, "--port", str(port), *extra]
    with open(log_path, "w") as log_file:
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def _wait_for_discovery(state_dir: Path, process: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        found = read_discovery(state_dir)
        if found is not None and found.pid == process.pid:
            try:
                if requests.get(f"{found.url}/ping", timeout=2).status_code == 200:
                    return found.url
            except requests.ConnectionError:
                pass
        time.sleep(0.3)
    raise AssertionError(f"mlops serve did not start: {log_path.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_deploy_while_mlops_serve_runs_under_load_drops_no_request_and_moves_traffic(
    platform, versions, tmp_path
):
    """Issue 14's must-show: `mlops serve` runs, 4 clients send requests on loopback without pause,
    and the deploy task's deployer (`endpoint_deployer`) moves the endpoint from version 1 to 2
    through the server's control plane: no request fails, and `served-model-name` moves from the
    old served entity to the new one for good, without a restart. Restarted, the server serves the
    persisted config."""
    name = "cp-live"
    log_path = tmp_path / "serve.log"
    os.environ["CP_TEST_TOKEN"] = "cp-token-7f3a"
    process = _start_serve(platform, log_path, _free_port(), "--token-env", "CP_TEST_TOKEN")
    try:
        url = _wait_for_discovery(platform.state_dir, process, log_path)
        discovery = platform.state_dir / "serving" / "server.json"
        assert stat.S_IMODE(discovery.stat().st_mode) == 0o600
        deployer = endpoint_deployer(platform)
        deployer.deploy(logged_endpoint(name, MODEL, versions[0]))
        assert deployed_endpoint(platform, name).config.served_entities[0].entity_version == "1"
        headers = {"Authorization": "Bearer cp-token-7f3a"}
        assert requests.get(f"{url}/health", headers=headers, timeout=10).status_code == 200
        with Load(url, name, headers) as load:
            time.sleep(0.5)
            started = time.monotonic()
            deployer.deploy(logged_endpoint(name, MODEL, versions[1]))
            deployed = time.monotonic()
            time.sleep(0.5)
        statuses = [status for *_, status, _ in load.answers]
        assert statuses.count(200) == len(statuses) > 50, set(statuses)
        # Each client meets the old version, then the new one for good: a request sent after the
        # switch never reaches the old models (those in flight at the switch finish on them).
        for served in load.served_by_client():
            switch = served.index("scorer-2")
            assert set(served[:switch]) == {"scorer-1"} and set(served[switch:]) == {"scorer-2"}, served
        first_new = min(received for *_, received, _, s in load.answers if s == "scorer-2")
        assert all(sent < first_new for _, sent, _, _, s in load.answers if s == "scorer-1")
        assert any(started < at < deployed for *_, at, _, s in load.answers if s == "scorer-1")
        assert process.poll() is None  # the same server, never restarted
        assert deployer.query(name, records_body(model_inputs(1))["dataframe_records"])[
            "served-model-name"
        ] == ("scorer-2")
    finally:
        os.environ.pop("CP_TEST_TOKEN", None)
        _stop(process)
    assert read_discovery(platform.state_dir) is None  # removed at exit
    restarted = _start_serve(platform, tmp_path / "restarted.log", _free_port())
    try:
        url = _wait_for_discovery(platform.state_dir, restarted, tmp_path / "restarted.log")
        assert _query(url, name).headers["served-model-name"] == "scorer-2"
    finally:
        _stop(restarted)
    deployer.delete(name)
    assert deployed_endpoint(platform, name) is None


def test_mlops_serve_starts_without_endpoints_and_refuses_a_second_control_plane(tmp_path):
    """With nothing deployed `mlops serve` still serves (the control plane takes the first deploy)
    and says so; a second `mlops serve` of the same target is refused, naming the first."""
    from mlops_laptop.platform.local import LocalPlatform

    empty = LocalPlatform("empty", tmp_path / "home")
    first = _start_serve(empty, tmp_path / "first.log", _free_port())
    try:
        _wait_for_discovery(empty.state_dir, first, tmp_path / "first.log")
        assert "No endpoint is deployed for target empty yet" in (tmp_path / "first.log").read_text()
        second = _start_serve(empty, tmp_path / "second.log", _free_port())
        assert second.wait(timeout=120) == 2
        assert f"in use by process {first.pid}" in (tmp_path / "second.log").read_text()
    finally:
        _stop(first)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _late(body: bytes, release: threading.Event) -> Iterator[bytes]:
    """A request body whose last bytes are sent only once `release` is set (a slow client)."""
    yield body[:1]
    release.wait(timeout=60)
    yield body[1:]


def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_change_whose_body_arrives_after_a_delete_does_not_bring_the_endpoint_back(workspace):
    """The handlers read the body before they look the endpoint up, then check and change it with no
    await in between: a config update or tag change whose body was still arriving when the endpoint
    was deleted is a 404, and nothing serves or is persisted under the name afterwards."""
    endpoints = workspace.client.serving_endpoints
    changes = [
        ("PUT", "config", EndpointCoreConfigInput(name="cp-late", served_entities=[_entity("2")]).as_dict()),
        ("PATCH", "tags", {"add_tags": [{"key": "team", "value": "late"}]}),
    ]
    with ThreadPoolExecutor(1) as pool:
        for method, path, body in changes:
            _create(workspace.client, "cp-late")
            release = threading.Event()
            late = pool.submit(
                requests.request,
                method,
                f"{workspace.url}{API}/cp-late/{path}",
                data=_late(json.dumps(body).encode(), release),
                headers={"content-type": "application/json"},
                timeout=60,
            )
            time.sleep(0.5)  # the handler has started and waits for the rest of the body
            endpoints.delete("cp-late")
            release.set()
            answer = late.result()
            assert (answer.status_code, answer.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
            assert list(endpoints.list()) == []
            assert not (endpoints_dir(workspace.state_dir) / "cp-late.json").exists()
            assert _query(workspace.url, "cp-late").status_code == 404


def test_a_table_switched_off_while_the_replaced_config_drains_still_gets_its_last_record(workspace):
    """A request in flight on a replaced config records into the inference table that config had:
    switching the table off meanwhile (`put_ai_gateway`) closes that writer only once the replaced
    endpoint has drained, so the acknowledged request is written, not lost nor dropped."""
    endpoints = workspace.client.serving_endpoints
    table = AiGatewayInferenceTableConfig(
        enabled=True, catalog_name="test", schema_name="serving_cp", table_name_prefix="drain"
    )
    _create(workspace.client, "cp-drain", ai_gateway=AiGatewayConfig(inference_table_config=table))

    def in_flight() -> int:
        health = requests.get(f"{workspace.url}/health", timeout=10).json()
        return health["endpoints"]["cp-drain"]["requests_in_flight"]

    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(
            requests.post,
            f"{workspace.url}/serving-endpoints/cp-drain/invocations",
            data=_late(json.dumps(records_body(model_inputs(2))).encode(), release),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        _until(lambda: in_flight() == 1)
        endpoints.update_config("cp-drain", served_entities=[_entity("2")])
        endpoints.wait_get_serving_endpoint_not_updating("cp-drain", timeout=WAIT)
        endpoints.put_ai_gateway(
            "cp-drain", inference_table_config=AiGatewayInferenceTableConfig(enabled=False)
        )
        release.set()
        answer = late.result()
    assert answer.status_code == 200 and answer.headers["served-model-name"] == "scorer-1"
    directory = local_table_dir(workspace.state_dir, "test.serving_cp.drain_payload")

    def logged() -> list[str]:
        parts = [path for path in directory.glob("*.parquet") if not path.name.startswith(".")]
        return [i for part in parts for i in pq.read_table(part).column("databricks_request_id").to_pylist()]

    _until(lambda: answer.headers["x-request-id"] in logged())


def test_a_persisted_config_that_no_longer_loads_is_a_503_and_no_config_yet_a_400(versions, tmp_path):
    """An endpoint whose persisted config fails to load is a server fault: 503 with the load error,
    whether models load before serving (`mlops serve`) or at the first request (a deployer's
    in-process server). An endpoint whose first config never served is the client's to fix: 400."""
    state_dir = tmp_path / "state"
    with local_workspace(state_dir) as local:
        _create(local.client, "cp-broken")
        local.client.serving_endpoints.create(name="cp-unborn", config=_core("99"))
        with pytest.raises(OperationFailed, match="UPDATE_FAILED"):
            local.client.serving_endpoints.wait_get_serving_endpoint_not_updating("cp-unborn", timeout=WAIT)
        unborn = _query(local.url, "cp-unborn")
        assert unborn.status_code == 400 and "no config serves yet" in unborn.json()["message"]
    path = endpoints_dir(state_dir) / "cp-broken.json"
    record = json.loads(path.read_text())
    record["endpoint"]["config"]["served_entities"][0]["entity_version"] = "99"  # deleted meanwhile
    path.write_text(json.dumps(record))
    for preload in (True, False):
        with local_workspace(state_dir, preload=preload) as restarted:
            broken = _query(restarted.url, "cp-broken")
            assert (broken.status_code, broken.json()["error_code"]) == (503, "TEMPORARILY_UNAVAILABLE")
            message = broken.json()["message"]
            assert "cannot serve its config" in message and "99" in message
            state = restarted.client.serving_endpoints.get("cp-broken").state
            assert state.ready == EndpointStateReady.NOT_READY


def test_what_the_laptop_would_ignore_is_refused_saying_so(workspace):
    """400 INVALID_PARAMETER_VALUE, nothing changed, for: `auto_capture_config` ("Starting February
    20, 2026, legacy inference tables can not be enabled on new or existing model serving
    endpoints", docs.databricks.com/machine-learning/model-serving/enable-model-serving-inference-
    tables.html); the deprecated `served_models` (`EndpointCoreConfigInput`); `workload_size` with
    provisioned concurrency ("Do not use if min_provisioned_concurrency and
    max_provisioned_concurrency are specified", `ServedEntityInput`, databricks/sdk/service/
    serving.py); and settings the laptop cannot honour (GPU, environment variables, instance profile)."""
    endpoints = workspace.client.serving_endpoints
    capture = AutoCaptureConfigInput(catalog_name="test", schema_name="serving_cp", enabled=True)
    with pytest.raises(InvalidParameterValue, match="legacy inference tables"):
        endpoints.create(
            name="cp-ignored",
            config=EndpointCoreConfigInput(
                name="cp-ignored", served_entities=[_entity("1")], auto_capture_config=capture
            ),
        )
    assert list(endpoints.list()) == []
    _create(workspace.client, "cp-ignored")

    def entity(**settings) -> list[ServedEntityInput]:
        return [ServedEntityInput(name="scorer-1", entity_name=MODEL, entity_version="1", **settings)]

    legacy = ServedModelInput(model_name=MODEL, model_version="1", scale_to_zero_enabled=True)
    refused = [
        ({"auto_capture_config": capture, "served_entities": entity()}, "legacy inference tables"),
        ({"served_models": [legacy], "served_entities": entity()}, "use served_entities"),
        (
            {"served_entities": entity(workload_size="Small", min_provisioned_concurrency=4)},
            "workload_size cannot be combined",
        ),
        (
            {"served_entities": entity(workload_type=ServingModelWorkloadType.GPU_SMALL)},
            "does not emulate workload_type GPU_SMALL",
        ),
        ({"served_entities": entity(environment_vars={"KEY": "value"})}, "does not emulate environment_vars"),
        (
            {"served_entities": entity(instance_profile_arn="arn:aws:iam::1:instance-profile/serving")},
            "does not emulate instance_profile_arn",
        ),
    ]
    for settings, message in refused:
        with pytest.raises(InvalidParameterValue, match=message):
            endpoints.update_config("cp-ignored", **settings)
    assert endpoints.get("cp-ignored").config.config_version == 1


def _dead_pid() -> int:
    """A process id no process has."""
    pid = int(Path("/proc/sys/kernel/pid_max").read_text())
    while True:
        pid -= 1
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue


def test_the_discovery_file_leads_only_to_its_own_live_server_and_past_any_proxy(tmp_path, monkeypatch):
    """A deployer uses the server a discovery file names only when that process is alive and the
    server answering at the URL is that process (after an unclean stop another target's server may
    listen on the port); the loopback ping ignores `HTTP(S)_PROXY` (as the simulator does)."""
    state_dir = tmp_path / "state"
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    for variable in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens: a proxied call fails
    control_plane = open_control_plane(state_dir, ServingSettings())
    with LocalServer(create_app(control_plane=control_plane)) as server:
        write_discovery(state_dir, Discovery(url=server.url, pid=os.getpid(), token="t"))
        assert running_server(state_dir) == Host(server.url, "t")
        write_discovery(state_dir, Discovery(url=server.url, pid=os.getppid()))  # another process's file
        assert running_server(state_dir) is None
        write_discovery(state_dir, Discovery(url=server.url, pid=_dead_pid()))  # left by a killed server
        assert running_server(state_dir) is None
