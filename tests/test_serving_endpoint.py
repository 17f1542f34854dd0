"""The local endpoint over real HTTP on 127.0.0.1: input formats, refusals, auth, traffic split,
micro-batching, the inference table and what it does when the model or the table fails."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
from mlflow.types import ParamSchema, ParamSpec

from mlops_laptop.platform.warehouse import local_table_dir
from mlops_laptop.serving.batching import MicroBatcher
from mlops_laptop.serving.endpoint import BatchSettings, Endpoint
from mlops_laptop.serving.inference_table import (
    MAX_LOGGED_PAYLOAD_BYTES,
    PAYLOAD_SCHEMA,
    InferenceRecord,
    InferenceTableWriter,
    logged_payload,
)
from mlops_laptop.serving.invocation import MAX_REQUEST_BYTES, InvocationError, check_params
from mlops_laptop.serving.router import TrafficRouter
from mlops_template.serving.served_entities import served_entity_id
from mlops_template.serving.spec import EndpointConfig, RouteSpec
from test_serving_support import (
    invoke,
    logged_endpoint,
    model_inputs,
    records_body,
    register_failing_model,
    register_regression_model,
    serving,
)

MODEL = "test.serving_endpoint.scorer"
ENDPOINT = "scores"
CHAMPION, CHALLENGER = "scorer-1", "scorer-2"


@pytest.fixture(scope="module")
def config(platform) -> EndpointConfig:
    platform.configure_mlflow()
    champion = register_regression_model(platform, MODEL, slope=2.0)
    challenger = register_regression_model(platform, MODEL, slope=3.0)
    assert (champion, challenger) == ("1", "2")
    return logged_endpoint(ENDPOINT, MODEL, champion, challenger, challenger_percent=30)


@pytest.fixture(scope="module")
def url(config, tmp_path_factory) -> Iterator[str]:
    with serving([config], tmp_path_factory.mktemp("endpoint-state")) as (base_url, _):
        yield base_url


@pytest.fixture(scope="module")
def champion_model(config):
    return mlflow.pyfunc.load_model(f"models:/{MODEL}/1")


def _payload_rows(state_dir: Path, config: EndpointConfig) -> pd.DataFrame:
    directory = local_table_dir(state_dir, config.inference_table.payload_table)
    assert not [path for path in directory.iterdir() if path.name.startswith(".")], (
        "a temporary file was left"
    )
    table = pq.read_table(directory)
    assert table.schema.equals(PAYLOAD_SCHEMA)
    return table.to_pandas()


def _formats(frame: pd.DataFrame) -> dict[str, dict]:
    records = json.loads(frame.to_json(orient="records"))
    return {
        "dataframe_split": {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {column: frame[column].tolist() for column in frame.columns}},
    }


@pytest.mark.parametrize("input_format", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_each_input_format_gets_the_models_predictions(url, champion_model, input_format):
    frame = model_inputs(4, seed=11)
    response = invoke(url, ENDPOINT, _formats(frame)[input_format], served=CHAMPION)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["predictions"] == pytest.approx(list(champion_model.predict(frame)))


def test_extra_columns_are_ignored_and_nulls_reach_a_model_that_imputes(url, champion_model):
    frame = model_inputs(2, seed=12)
    body = records_body(frame.assign(user_id=["r1", "r2"]))
    body["dataframe_records"][0]["distance"] = None
    response = invoke(url, ENDPOINT, body, served=CHAMPION)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert np.isfinite(predictions).all()
    assert predictions[1] == pytest.approx(champion_model.predict(frame.iloc[[1]])[0])


def _good_body() -> dict:
    return records_body(model_inputs(1, seed=13))


def _without(column: str) -> dict:
    return records_body(model_inputs(1).drop(columns=[column]))


def _bad_type() -> dict:
    body = _good_body()
    body["dataframe_records"][0]["distance"] = "far"
    return body


BAD_REQUESTS = {
    "not json": (b'{"dataframe_records": [', "application/json", 400, "not valid UTF-8 JSON"),
    "not utf-8": (b'{"inputs": "\xff"}', "application/json", 400, "not valid UTF-8 JSON"),
    "a json list": (b"[1, 2]", "application/json", 400, "must be a JSON object"),
    "empty body": (b"", "application/json", 400, "the request body is empty"),
    "wrong content type": (
        json.dumps(_good_body()),
        "text/plain",
        415,
        "Content-Type must be application/json",
    ),
    "no input key": ({"data": [1]}, None, 400, "exactly one of dataframe_records, dataframe_split, inputs"),
    "two input keys": (
        {"inputs": {"distance": [1.0]}, "instances": [{"distance": 1.0}]},
        None,
        400,
        r"exactly one of .*got \['inputs', 'instances'\]",
    ),
    "missing column": (
        _without("distance"),
        None,
        400,
        r"dataframe_records is missing inputs \['distance'\]",
    ),
    "wrong type": (_bad_type(), None, 400, "distance"),
    "empty records": ({"dataframe_records": []}, None, 400, "dataframe_records has no rows"),
    "empty split": (
        {"dataframe_split": {"columns": ["distance"], "data": []}},
        None,
        400,
        "dataframe_split has no rows",
    ),
    "malformed split": (
        {"dataframe_split": {"columns": ["distance"], "data": "x"}},
        None,
        400,
        "dataframe_split",
    ),
    "split with extra keys": ({"dataframe_split": {"rows": []}}, None, 400, "'data' field"),
    "deep nesting": (
        '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "application/json",
        400,
        "nested deeper",
    ),
    "params not an object": (_good_body() | {"params": [1, 2]}, None, 400, "params must be a JSON object"),
    "client_request_id not a string": (
        _good_body() | {"client_request_id": 7},
        None,
        400,
        "must be a string",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_answering(url, case):
    body, content_type, status, message = BAD_REQUESTS[case]
    headers = {"Content-Type": content_type} if content_type else {}
    response = invoke(url, ENDPOINT, body, served=CHAMPION, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error_code", "message"}
    assert error["error_code"] == ("BAD_REQUEST" if status == 400 else "UNSUPPORTED_MEDIA_TYPE")
    assert re.search(message, error["message"]), error["message"]
    assert invoke(url, ENDPOINT, _good_body()).status_code == 200


def _declare_oversized_body(url: str) -> tuple[int, dict]:
    """POST only headers announcing a body over the limit and `Expect: 100-continue`, as a client
    does that waits to be told to send it; the answer must come without the body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", f"/serving-endpoints/{ENDPOINT}/invocations")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(MAX_REQUEST_BYTES + 1))
    connection.putheader("Expect", "100-continue")
    connection.endheaders()
    response = connection.getresponse()
    answer = response.status, json.loads(response.read())
    connection.close()
    return answer


def test_a_body_declared_over_16_mb_is_refused_before_it_is_read(url):
    status, error = _declare_oversized_body(url)
    assert (status, error["error_code"]) == (413, "REQUEST_TOO_LARGE")
    assert requests.get(f"{url}/ping", timeout=10).status_code == 200


def _send_whole_oversized_body(url: str, size: int) -> tuple[int, dict]:
    """Send a `Connection: close` request (as urllib does) with its whole body over one socket, then
    read the answer: a server that answers and closes before reading the body resets the socket."""
    parts = urlsplit(url)
    head = (
        f"POST /serving-endpoints/{ENDPOINT}/invocations HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head.encode())
        chunk = b" " * (1024 * 1024)
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_body_over_16_mb_sent_whole_gets_the_413_json_not_a_reset(url):
    """Databricks answers a body over 16 MB with 413 (the client reads it); an early answer followed by
    a close while the client still sends would reset the connection (urllib: ConnectionResetError)."""
    status, error = _send_whole_oversized_body(url, 20 * 1024 * 1024)
    assert (status, error["error_code"]) == (413, "REQUEST_TOO_LARGE")
    assert "exceeds 16777216 bytes" in error["message"]
    assert invoke(url, ENDPOINT, _good_body()).status_code == 200


def test_a_streamed_body_over_16_mb_is_cut_off(url):
    chunk = b" " * (1024 * 1024)
    response = requests.post(
        f"{url}/serving-endpoints/{ENDPOINT}/invocations",
        data=(chunk for _ in range(17)),  # chunked transfer: no Content-Length to check
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert "exceeds 16777216 bytes" in response.json()["message"]
    assert invoke(url, ENDPOINT, _good_body()).status_code == 200


def test_unknown_endpoints_paths_and_served_models_are_404_json(url):
    for response in (
        invoke(url, "nope", _good_body()),
        invoke(url, ENDPOINT, _good_body(), served="scorer-9"),
        requests.get(f"{url}/nothing-here", timeout=10),
    ):
        assert response.status_code == 404
        assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "scorer-1" in invoke(url, ENDPOINT, _good_body(), served="x").json()["message"]
    assert requests.get(f"{url}/serving-endpoints/{ENDPOINT}/invocations", timeout=10).status_code == 405


def test_the_served_entity_that_answered_is_in_the_served_model_name_header(url):
    """Databricks names the served entity in `served-model-name` (databricks/sdk/service/serving.py:
    `ServingEndpointsAPI.query` reads that response header into `QueryEndpointResponse`)."""
    response = invoke(url, ENDPOINT, _good_body(), served=CHALLENGER)
    assert response.headers["served-model-name"] == CHALLENGER
    assert response.headers["x-request-id"]


def test_traffic_is_split_per_request_by_the_route_percentages(config, tmp_path):
    """A server of its own, its router seeded: the 400 draws are the same whatever the order in
    which the concurrent requests reach it, so the share is too."""

    def served(_: int) -> str:
        return invoke(base_url, ENDPOINT, _good_body()).headers["served-model-name"]

    with serving([config], tmp_path, seed=7) as (base_url, _), ThreadPoolExecutor(4) as pool:
        counts = Counter(pool.map(served, range(400)))
    assert set(counts) == {CHAMPION, CHALLENGER}
    assert counts[CHALLENGER] / 400 == pytest.approx(0.30, abs=0.075)  # > 3 standard deviations


def test_payloads_over_the_logging_limit_are_logged_as_null():
    assert logged_payload("é" * (MAX_LOGGED_PAYLOAD_BYTES // 2 + 1), "CODE") == (None, ["CODE"])
    assert logged_payload('{"a": 1}', "CODE") == ('{"a": 1}', [])
    assert logged_payload(None, "CODE") == (None, [])


def test_the_router_draws_each_route_with_its_percentage():
    routes = [
        RouteSpec(served_entity_name=n, traffic_percentage=p)
        for n, p in (("a", 70), ("b", 25), ("c", 5), ("d", 0))
    ]
    router = TrafficRouter(routes, random.Random(3))
    counts = Counter(router.choose() for _ in range(40_000))
    assert "d" not in counts
    for name, share in (("a", 0.70), ("b", 0.25), ("c", 0.05)):
        assert counts[name] / 40_000 == pytest.approx(share, abs=0.01)


def test_every_request_lands_in_the_inference_table_on_shutdown(config, tmp_path):
    frame = model_inputs(2, seed=14)
    with serving([config], tmp_path) as (base_url, _):
        ok = invoke(base_url, ENDPOINT, records_body(frame, client_request_id="request-42"), served=CHAMPION)
        bad = invoke(base_url, ENDPOINT, {"dataframe_records": []}, served=CHALLENGER)
        invoke(base_url, ENDPOINT, "x", headers={"Content-Type": "text/csv"})
        invoke(base_url, ENDPOINT, _good_body(), served="scorer-9")
        assert _declare_oversized_body(base_url)[0] == 413
        table_dir = local_table_dir(tmp_path, config.inference_table.payload_table)
        assert not list(table_dir.glob("*.parquet")), "records are batched, not written per request"
    rows = _payload_rows(tmp_path, config).set_index("databricks_request_id")
    assert sorted(rows.status_code) == [200, 400, 404, 413, 415]
    [too_large] = rows[rows.status_code == 413].itertuples()
    assert (too_large.request, list(too_large.logging_error_codes)) == (None, ["MAX_REQUEST_SIZE_EXCEEDED"])
    answered = rows.loc[ok.headers["x-request-id"]]
    assert answered.client_request_id == "request-42"
    ids = {entity.name: served_entity_id(ENDPOINT, entity) for entity in config.served_entities}
    assert answered.served_entity_id == ids[CHAMPION]  # an opaque id, as Databricks logs
    assert json.loads(answered.request)["dataframe_records"][0]["zone"] == int(frame.zone[0])
    assert json.loads(answered.response) == ok.json()
    assert answered.requester == "local" and answered.sampling_fraction == 1.0
    assert answered.execution_duration_ms >= 0 and str(answered.request_date) == str(
        answered.request_time.date()
    )
    refused = rows.loc[bad.headers["x-request-id"]]
    assert (refused.status_code, refused.served_entity_id) == (400, ids[CHALLENGER])
    assert json.loads(refused.response)["error_code"] == "BAD_REQUEST"
    assert list(refused.logging_error_codes) == []


def test_a_token_is_required_when_configured_and_never_logged(config, tmp_path, caplog):
    token = "tok-3f9a61c0d2"
    caplog.set_level("DEBUG")
    with serving([config], tmp_path, token=token) as (base_url, _):
        missing = invoke(base_url, ENDPOINT, _good_body())
        wrong = invoke(base_url, ENDPOINT, _good_body(), headers={"Authorization": "Bearer nope"})
        right = invoke(base_url, ENDPOINT, _good_body(), headers={"Authorization": f"Bearer {token}"})
        assert requests.get(f"{base_url}/health", timeout=10).status_code == 401
        health = requests.get(f"{base_url}/health", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert requests.get(f"{base_url}/ping", timeout=10).status_code == 200
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert missing.json()["error_code"] == "UNAUTHENTICATED"
    assert health.json()["endpoints"][ENDPOINT]["routes"] == {CHAMPION: 70, CHALLENGER: 30}
    rows = _payload_rows(tmp_path, config)
    assert sorted(rows.status_code) == [200, 401, 401]
    assert token not in rows.to_json()
    assert token not in caplog.text


def _race(base_url: str, bodies: list[dict]) -> list[requests.Response]:
    """POST the bodies to the champion at once, one connected client each."""
    barrier = threading.Barrier(len(bodies))

    def call(body: dict) -> requests.Response:
        with requests.Session() as session:
            session.get(f"{base_url}/ping", timeout=10)  # connect before the race
            barrier.wait(timeout=30)
            path = f"/serving-endpoints/{ENDPOINT}/served-models/{CHAMPION}/invocations"
            return session.post(base_url + path, json=body, timeout=60)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(call, bodies))


def test_concurrent_requests_share_model_calls_and_a_bad_one_fails_alone(config, tmp_path):
    clients, bad = 12, {3, 8}
    bodies = [records_body(model_inputs(3, seed=100 + n)) for n in range(clients)]
    with serving([config], tmp_path, batching=BatchSettings(max_wait_ms=100)) as (base_url, [endpoint]):
        responses = _race(base_url, bodies)
        stats = endpoint.models[CHAMPION].batcher.stats
        assert (stats.requests, stats.model_calls < clients) == (clients, True)
        for n in bad:
            bodies[n]["dataframe_records"][1]["distance"] = "far"  # refused when its batch is conformed
        mixed = _race(base_url, bodies)
    model = endpoint.models[CHAMPION].model
    for n, body in enumerate(bodies):
        if n in bad:
            assert mixed[n].status_code == 400
            assert "distance" in mixed[n].json()["message"]
        else:
            expected = list(
                model.predict(pd.DataFrame(body["dataframe_records"]).astype(model_inputs(1).dtypes))
            )
            assert responses[n].json()["predictions"] == pytest.approx(expected)
            assert mixed[n].json()["predictions"] == pytest.approx(expected)


def test_a_failing_request_does_not_fail_the_others_in_its_batch():
    calls: list[int] = []

    def predict(frame: pd.DataFrame, params: dict | None) -> np.ndarray:
        calls.append(len(frame))
        if (frame["x"] < 0).any():
            raise ValueError("negative x")
        return frame["x"].to_numpy() * 2

    async def scenario() -> list[object]:
        batcher = MicroBatcher(predict, name="unit")
        batcher.start()
        frames = [pd.DataFrame({"x": [float(n), n + 0.5]}) for n in range(5)] + [pd.DataFrame({"x": [-1.0]})]
        results = await asyncio.gather(*(batcher.predict(f) for f in frames), return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert [list(r) for r in results[:5]] == [[2.0 * n, 2.0 * n + 1] for n in range(5)]
    assert isinstance(results[5], ValueError)
    assert calls == [11, 2, 2, 2, 2, 2, 1]  # the batch, then one call per request


def test_concurrent_predictions_become_one_model_call():
    calls: list[int] = []

    def predict(frame: pd.DataFrame, params: dict | None) -> pd.DataFrame:
        calls.append(len(frame))
        return pd.DataFrame({"y": frame["x"] + 1, "params": [json.dumps(params)] * len(frame)})

    async def scenario() -> list[pd.DataFrame]:
        batcher = MicroBatcher(predict, name="unit")
        batcher.start()
        frames = [pd.DataFrame({"x": [float(n)] * (n + 1)}) for n in range(20)]
        results = await asyncio.gather(*(batcher.predict(f, {"k": n % 2}) for n, f in enumerate(frames)))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert sorted(calls) == [100, 110]  # one call per distinct params
    for n, result in enumerate(results):
        assert list(result["y"]) == [n + 1.0] * (n + 1)
        assert set(result["params"]) == {json.dumps({"k": n % 2})}


def test_served_entity_ids_are_opaque_stable_and_change_with_the_configuration(config):
    """The AI-Gateway inference table logs `served_entity_id`, "the unique ID of the served entity"
    (https://docs.databricks.com/aws/en/ai-gateway/inference-tables), resolved to its name and version
    through `system.serving.served_entities`: no version can be read from the id itself."""
    champion, challenger = config.served_entities
    ids = [served_entity_id(ENDPOINT, champion), served_entity_id(ENDPOINT, challenger)]
    assert all(re.fullmatch("[0-9a-f]{32}", entity_id) for entity_id in ids)
    assert ids == [served_entity_id(ENDPOINT, champion), served_entity_id(ENDPOINT, challenger)]
    assert len({*ids, served_entity_id("other", champion)}) == 3
    assert served_entity_id(ENDPOINT, champion.model_copy(update={"workload_size": "Large"})) != ids[0]


@pytest.fixture(scope="module")
def failing_config(platform) -> EndpointConfig:
    version = register_failing_model(platform, "test.serving_endpoint.broken_model")
    return logged_endpoint("broken", "test.serving_endpoint.broken_model", version)


def test_a_model_that_raises_on_valid_input_is_a_500_logged_with_its_status(failing_config, tmp_path):
    """Server faults are 5xx and client mistakes 4xx (Databricks REST errors: 500 INTERNAL_ERROR); a
    model that fails on an input its signature accepts must not be blamed on the client."""
    with serving([failing_config], tmp_path) as (base_url, _):
        failed = invoke(base_url, "broken", _good_body())
        refused = invoke(base_url, "broken", {"dataframe_records": [{"distance": "far"}]})
        assert requests.get(f"{base_url}/ping", timeout=10).status_code == 200
    assert failed.status_code == 500, failed.text
    assert failed.json()["error_code"] == "INTERNAL_ERROR"
    assert "RuntimeError: the model has a bug" in failed.json()["message"]
    assert refused.status_code == 400  # schema mismatch found by MLflow's parsing stays the client's
    rows = _payload_rows(tmp_path, failing_config).set_index("databricks_request_id")
    logged = rows.loc[failed.headers["x-request-id"]]
    assert (logged.status_code, json.loads(logged.response)["error_code"]) == (500, "INTERNAL_ERROR")
    assert json.loads(logged.request) == _good_body()


def _until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _break_table(endpoint: Endpoint) -> Path:
    """Replace the table's directory by a file: every write into it fails (a real OSError)."""
    assert endpoint.table is not None
    directory = endpoint.table.directory
    directory.rmdir()
    directory.write_text("not a directory")
    return directory


def test_a_failed_inference_table_write_is_retried_until_it_succeeds(config, tmp_path):
    """Nothing acknowledged is lost: a write that fails is retried (with backoff) and lands once the
    table can be written again."""
    with serving([config], tmp_path, table_flush_seconds=0.05) as (base_url, [endpoint]):
        writer = endpoint.table
        writer.retry_seconds = 0.5
        directory = _break_table(endpoint)
        answered = invoke(base_url, ENDPOINT, _good_body())
        _until(lambda: writer.stats.failed_writes >= 1)
        directory.unlink()
        directory.mkdir()
        _until(lambda: writer.stats.written == 1)
        health = requests.get(f"{base_url}/health", timeout=10).json()
    assert health["status"] == "ok"
    table = health["endpoints"][ENDPOINT]["inference_table"]
    assert (table["written_records"], table["lost_records"], table["dropped_records"]) == (1, 0, 0)
    assert table["failed_writes"] >= 1 and "NotADirectoryError" in table["last_error"]
    rows = _payload_rows(tmp_path, config)
    assert list(rows.databricks_request_id) == [answered.headers["x-request-id"]]


def test_records_that_cannot_be_written_are_counted_and_reported_by_health(config, tmp_path):
    with serving([config], tmp_path, table_flush_seconds=0.05) as (base_url, [endpoint]):
        writer = endpoint.table
        writer.retries, writer.retry_seconds = 2, 0.01
        _break_table(endpoint)
        for _ in range(3):
            assert invoke(base_url, ENDPOINT, _good_body()).status_code == 200
        _until(lambda: writer.stats.lost == 3)
        health = requests.get(f"{base_url}/health", timeout=10).json()
    assert health["status"] == "degraded"
    table = health["endpoints"][ENDPOINT]["inference_table"]
    assert (table["written_records"], table["lost_records"]) == (0, 3)
    assert table["failed_writes"] >= 3  # the first file: 3 attempts; after a loss, one per file
    assert "NotADirectoryError" in table["last_error"]


def test_records_refused_by_a_full_queue_are_counted(tmp_path):
    writer = InferenceTableWriter(tmp_path / "payload", "test.serving.payload", max_queued=1)
    writer.write(_record("r"))
    writer.write(_record("r"))
    assert (writer.stats.dropped, writer.stats.healthy) == (1, False)


def test_params_the_models_params_schema_refuses_are_the_clients_mistake():
    """MLflow enforces `params` against the signature's params schema before predicting
    (mlflow/pyfunc/__init__.py `_validate_prediction_input`): a refusal there is a 400, checked before
    the model runs, so only the model's own failures are 5xx."""
    schema = ParamSchema([ParamSpec("top_k", "long", 1)])
    check_params({"top_k": 3}, schema)
    check_params(None, schema)
    with pytest.raises(InvocationError, match="params do not match") as refused:
        check_params({"top_k": "many"}, schema)
    assert (refused.value.status, refused.value.error_code) == (400, "BAD_REQUEST")


def _record(request_id: str) -> InferenceRecord:
    return InferenceRecord(
        databricks_request_id=request_id,
        client_request_id=None,
        request_time=pd.Timestamp.now(tz="UTC").to_pydatetime(),
        status_code=200,
        execution_duration_ms=1,
        request="{}",
        response="{}",
        served_entity_id=None,
        requester="local",
    )


def test_a_record_written_after_close_is_counted_as_dropped_not_queued_unread(tmp_path):
    """A closed writer's thread reads no more: a record written then would vanish unless counted."""
    writer = InferenceTableWriter(tmp_path / "payload", "test.serving.payload", flush_seconds=0.01)
    writer.start()
    writer.write(_record("before"))
    writer.close()
    writer.write(_record("after"))
    assert (writer.stats.written, writer.stats.dropped, writer.stats.healthy) == (1, 1, False)
    assert list(pq.read_table(tmp_path / "payload").to_pandas().databricks_request_id) == ["before"]


def test_a_request_answered_after_its_table_closed_shows_as_dropped_in_health(config, tmp_path):
    with serving([config], tmp_path) as (base_url, [endpoint]):
        endpoint.table.close()
        assert invoke(base_url, ENDPOINT, _good_body()).status_code == 200
        health = requests.get(f"{base_url}/health", timeout=10).json()
    assert health["status"] == "degraded"
    assert health["endpoints"][ENDPOINT]["inference_table"]["dropped_records"] == 1


def test_stopping_a_batcher_whose_model_call_still_runs_does_not_block_the_event_loop():
    """A request cancelled (client gone) leaves its batch running in the model thread; draining the
    batcher waits for that call in a thread, so every other request on the loop keeps being served."""
    release = threading.Event()

    def slow(frame: pd.DataFrame, params: dict | None) -> pd.DataFrame:
        release.wait(timeout=10)
        return frame

    async def scenario() -> tuple[bool, float]:
        batcher = MicroBatcher(slow, name="slow")
        batcher.start()
        with batcher.reserve() as predict:
            call = asyncio.ensure_future(predict(pd.DataFrame({"x": [1.0]})))
            await asyncio.sleep(0.05)  # the batch is in the model thread now
            call.cancel()
        drain = asyncio.ensure_future(batcher.drain())
        started = time.monotonic()
        await asyncio.sleep(0.1)  # the loop must run this while the model call goes on
        waited = time.monotonic() - started
        still_draining = not drain.done()
        release.set()
        await drain
        return still_draining, waited

    timer = threading.Timer(3.0, release.set)  # unblocks a loop that the drain would block
    timer.start()
    try:
        still_draining, waited = asyncio.run(scenario())
    finally:
        timer.cancel()
    assert still_draining and waited < 1.0
