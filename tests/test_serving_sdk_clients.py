"""The Databricks clients a user already has, pointed at the local endpoint over real HTTP: the SDK's
`WorkspaceClient.serving_endpoints.query` and MLflow's `databricks` deployments client."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, NotFound, Unauthenticated
from databricks.sdk.service.serving import DataframeSplitInput, QueryEndpointResponse
from mlflow.deployments import get_deploy_client

from mlops_laptop.serving.endpoint import Endpoint
from test_serving_support import logged_endpoint, model_inputs, register_regression_model, serving

MODEL = "test.serving_sdk.scorer"
ENDPOINT = "scores-sdk"
TOKEN = "sdk-token-5d1e07"


@pytest.fixture(scope="module")
def endpoint(platform, tmp_path_factory) -> Iterator[tuple[str, Endpoint]]:
    """Champion and challenger (half the traffic each) served with a token on loopback."""
    platform.configure_mlflow()
    champion = register_regression_model(platform, MODEL, slope=2.0)
    challenger = register_regression_model(platform, MODEL, slope=3.0)
    config = logged_endpoint(ENDPOINT, MODEL, champion, challenger, challenger_percent=50)
    with serving([config], tmp_path_factory.mktemp("sdk-endpoint"), token=TOKEN) as (url, [local]):
        yield url, local


@pytest.fixture
def databricks_env(endpoint, monkeypatch, tmp_path: Path) -> str:
    """`DATABRICKS_HOST` / `DATABRICKS_TOKEN` for the local endpoint and nothing else Databricks."""
    url, _ = endpoint
    for variable in [name for name in os.environ if name.startswith("DATABRICKS_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    monkeypatch.setenv("DATABRICKS_HOST", url)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    return url


def _formats(frame: pd.DataFrame) -> dict[str, dict]:
    """The four input formats as the SDK's `query` takes them."""
    records = json.loads(frame.to_json(orient="records"))
    split = json.loads(frame.to_json(orient="split", index=False))
    split_input = DataframeSplitInput(columns=split["columns"], data=split["data"])
    columns = {name: [record[name] for record in records] for name in frame.columns}
    return {
        "dataframe_split": {"dataframe_split": split_input},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": columns},
    }


@pytest.mark.parametrize("input_format", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_the_sdk_query_gets_predictions_and_the_served_model_name(endpoint, databricks_env, input_format):
    """`ServingEndpointsAPI.query` posts to /serving-endpoints/{name}/invocations and reads the
    `served-model-name` response header into `QueryEndpointResponse.served_model_name`
    (databricks/sdk/service/serving.py)."""
    _, local = endpoint
    frame = model_inputs(3, seed=21)
    workspace = WorkspaceClient(host=databricks_env, token=TOKEN)
    served = set()
    for _ in range(8):  # half the traffic each: both served entities answer, each with its own model
        response = workspace.serving_endpoints.query(name=ENDPOINT, **_formats(frame)[input_format])
        assert isinstance(response, QueryEndpointResponse)
        expected = local.models[response.served_model_name].model.predict(frame)
        assert response.predictions == pytest.approx(list(expected))
        served.add(response.served_model_name)
    assert served <= {"scorer-1", "scorer-2"}


def test_the_sdk_raises_its_own_errors_for_refusals(endpoint, databricks_env):
    """Refusals are Databricks error bodies `{"error_code", "message"}` with the 4xx status, which the
    SDK turns into its typed errors (databricks/sdk/errors)."""
    workspace = WorkspaceClient(host=databricks_env, token=TOKEN)
    with pytest.raises(BadRequest, match="missing inputs"):
        workspace.serving_endpoints.query(name=ENDPOINT, dataframe_records=[{"distance": "far"}])
    with pytest.raises(NotFound, match="does not exist"):
        workspace.serving_endpoints.query(name="no-such-endpoint", dataframe_records=[{"x": 1}])
    with pytest.raises(Unauthenticated):
        WorkspaceClient(host=databricks_env, token="wrong").serving_endpoints.query(
            name=ENDPOINT, dataframe_records=[{"x": 1}]
        )


def test_the_mlflow_databricks_deployments_client_predicts(endpoint, databricks_env):
    """`get_deploy_client("databricks").predict` posts the inputs to /serving-endpoints/{endpoint}/
    invocations with the workspace credentials (mlflow/deployments/databricks/__init__.py)."""
    _, local = endpoint
    frame = model_inputs(2, seed=22)
    client = get_deploy_client("databricks")
    response = client.predict(endpoint=ENDPOINT, inputs=_formats(frame)["dataframe_records"])
    candidates = [list(model.model.predict(frame)) for model in local.models.values()]
    assert any(response["predictions"] == pytest.approx(expected) for expected in candidates)
