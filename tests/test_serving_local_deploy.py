"""The deploy task on the local platform, the inference table read through Spark, and `mlops serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
import typer
from typer.testing import CliRunner

from mlops_laptop.serving.cli import serve_command
from mlops_laptop.serving.local_deploy import deployed_endpoint
from mlops_laptop.serving.local_host import local_host
from mlops_template.serving.served_entities import SERVED_ENTITIES_TABLE
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.deploy import DeployConfig
from test_serving_support import deploy_champion_and_challenger, invoke, model_inputs, records_body

MODEL = "test.serving_deploy.scorer"
ENDPOINT = "scores-dev"
PAYLOAD_TABLE = "test.serving_deploy.scores_dev_payload"
SERVE = "import typer; from mlops_laptop.serving.cli import serve_command; typer.run(serve_command)"


@pytest.fixture(scope="module")
def deployed(platform) -> None:
    deploy_champion_and_challenger(
        platform,
        MODEL,
        f"--endpoint-name={ENDPOINT}",
        "--schema=test.serving_deploy",
        "--inference-table-enabled=true",
        "--rollout=canary",
        "--challenger-percent=25",
        "--workload-size=Medium",
    )


def test_the_deploy_task_creates_the_endpoint_through_the_local_control_plane(deployed, platform, spark):
    """The deploy task's deployer is the SDK's, against the local host: the endpoint persists as
    `serving_endpoints.get` describes it (`ServingEndpointDetailed`), and the inference table is
    registered in the metastore (empty: the served entities' input-example checks are health
    checks, not traffic)."""
    endpoint = deployed_endpoint(platform, ENDPOINT)
    assert [(e.name, e.entity_version, e.workload_size) for e in endpoint.config.served_entities] == [
        ("scorer-1", "1", "Medium"),
        ("scorer-2", "2", "Medium"),
    ]
    assert {r.served_entity_name: r.traffic_percentage for r in endpoint.config.traffic_config.routes} == {
        "scorer-1": 75,
        "scorer-2": 25,
    }
    assert {t.key: t.value for t in endpoint.tags}["git_sha"] == "unknown"
    assert endpoint.ai_gateway.inference_table_config.table_name_prefix == "scores_dev"
    payload = platform.read_table(PAYLOAD_TABLE)
    assert payload.schema.simpleString() == (
        "struct<databricks_request_id:string,client_request_id:string,request_date:date,request_time:timestamp,"
        "status_code:int,sampling_fraction:double,execution_duration_ms:bigint,request:string,response:string,"
        "served_entity_id:string,logging_error_codes:array<string>,requester:string>"
    )
    assert payload.count() == 0


def test_the_deployer_records_the_served_entities_the_payload_ids_name(deployed, platform, spark):
    """The inference table's `served_entity_id` joins `system.serving.served_entities` for the served
    entity's name and version (https://docs.databricks.com/aws/en/ai-gateway/inference-tables): the
    local deployer keeps that table under the same three-level name, mapped like every table."""
    entities = platform.read_table(SERVED_ENTITIES_TABLE)
    assert entities.schema.simpleString() == (
        "struct<served_entity_id:string,endpoint_name:string,served_entity_name:string,entity_type:string,"
        "entity_name:string,entity_version:string,change_time:timestamp>"
    )
    with local_host(platform.state_dir) as host:  # the in-process server flushes its table at the end
        for served in ("scorer-1", "scorer-2"):
            assert invoke(host.url, ENDPOINT, records_body(model_inputs(1)), served=served).status_code == 200
    spark.catalog.refreshTable(platform.table_name(PAYLOAD_TABLE))
    joined = platform.read_table(PAYLOAD_TABLE).join(entities, on="served_entity_id")
    assert sorted(
        (row.endpoint_name, row.served_entity_name, row.entity_name, row.entity_version, row.entity_type)
        for row in joined.collect()
    ) == [
        (ENDPOINT, "scorer-1", MODEL, "1", "CUSTOM_MODEL"),
        (ENDPOINT, "scorer-2", MODEL, "2", "CUSTOM_MODEL"),
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.5)
    raise AssertionError(f"mlops serve did not start: {log_path.read_text()}")


def test_mlops_serve_answers_with_a_token_and_flushes_the_table_on_sigterm(
    deployed, platform, spark, tmp_path
):
    token = "serve-token-81b2c4"
    port = _free_port()
    log_path = tmp_path / "serve.log"
    env = os.environ | {"MLOPS_HOME": str(platform.state_dir.parent), "SERVE_TEST_TOKEN": token}
    command = [
        sys.executable,
        "-c",
        SERVE,
        "-t",
        platform.target,
        "--port",
        str(port),
        "--token-env",
        "SERVE_TEST_TOKEN",
    ]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, process, log_path)
        auth = {"Authorization": f"Bearer {token}"}
        answered = invoke(
            url, ENDPOINT, records_body(model_inputs(2), client_request_id="serve-1"), headers=auth
        )
        refused = invoke(url, ENDPOINT, {"dataframe_records": [{"distance": "x"}]}, headers=auth)
        anonymous = invoke(url, ENDPOINT, records_body(model_inputs(1)))
        assert (answered.status_code, refused.status_code, anonymous.status_code) == (200, 400, 401)
        assert answered.headers["served-model-name"] in {"scorer-1", "scorer-2"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    spark.catalog.refreshTable(platform.table_name(PAYLOAD_TABLE))
    ids = [r.headers["x-request-id"] for r in (answered, refused, anonymous)]
    rows = platform.read_table(PAYLOAD_TABLE).where(f"databricks_request_id in {tuple(ids)}").collect()
    assert sorted(row.status_code for row in rows) == [200, 400, 401]
    assert {row.client_request_id for row in rows} == {"serve-1", None}
    assert token not in log_path.read_text()
    assert all(token not in str(row.asDict()) for row in rows)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(serve_command)
    return app


def test_mlops_serve_refuses_an_unset_token_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.delenv("NO_SUCH_TOKEN_VARIABLE", raising=False)
    result = CliRunner().invoke(_cli(), ["-t", "nothing", "--token-env", "NO_SUCH_TOKEN_VARIABLE"])
    assert result.exit_code == 2
    assert "NO_SUCH_TOKEN_VARIABLE is not set or empty" in " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rollout=ab_test"], "needs --ab-key-column"),
        (["--rollout=ab_test", "--ab-key-column=user"], "needs --experiment-name"),
        (["--workload-size=Huge"], "--workload-size"),
        (["--challenger-percent=100"], "--challenger-percent"),
    ],
)
def test_the_deploy_task_refuses_contradictory_parameters(extra, message):
    base = ["--model-name=a.b.c", "--endpoint-name=e", "--schema=a.b"]
    with pytest.raises(TaskArgumentError, match=message):
        build_config(DeployConfig, base + extra)


def test_the_deploy_task_takes_its_schema_as_catalog_dot_schema_like_the_other_pipeline_tasks():
    base = ["--model-name=a.b.c", "--endpoint-name=e"]
    config = build_config(DeployConfig, [*base, "--schema=a.b"])
    assert (config.catalog, config.schema_name) == ("a", "b")
    with pytest.raises(TaskArgumentError, match="--schema: .*not a two-level Unity Catalog schema name"):
        build_config(DeployConfig, [*base, "--schema=b"])
    with pytest.raises(TaskArgumentError, match="--catalog: Extra inputs are not permitted"):
        build_config(DeployConfig, [*base, "--catalog=a", "--schema=a.b"])
