"""The local serving control plane: record an endpoint spec and check it answers on loopback."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException

from mlops_laptop.serving.app import SERVED_MODEL_NAME_HEADER, create_app
from mlops_laptop.serving.endpoint import Endpoint, ServedModel
from mlops_laptop.serving.inference_table import register_local_table
from mlops_laptop.serving.invocation import parse_invocation
from mlops_laptop.serving.server import LocalServer
from mlops_template.serving.deploy import EndpointDeploymentError
from mlops_template.serving.served_entities import (
    SERVED_ENTITIES_DDL,
    SERVED_ENTITIES_TABLE,
    served_entity_rows,
)
from mlops_template.serving.spec import (
    EndpointConfig,
    delete_endpoint_spec,
    load_endpoint_spec,
    load_endpoint_specs,
    same_service,
    save_endpoint_spec,
)

if TYPE_CHECKING:
    from mlops_laptop.platform.local import LocalPlatform

log = logging.getLogger(__name__)


class LocalEndpointDeployer:
    """Records the spec in the local state, then serves it once on loopback to check it answers.

    The served entities are recorded in the local `system.serving.served_entities` table (the ids
    the endpoint logs). The check sends each served entity its model's input example and, with the
    inference table on, registers the table in the metastore and reads the check's rows back.
    """

    def __init__(self, platform: LocalPlatform) -> None:
        self._platform = platform

    def deploy(self, config: EndpointConfig) -> None:
        platform = self._platform
        platform.configure_mlflow()
        path = save_endpoint_spec(platform.state_dir, config)
        log.info("recorded endpoint %s in %s", config.name, path)
        record_served_entities(platform, config)
        if config.inference_table.enabled:
            register_local_table(platform, config.inference_table)
        endpoint = Endpoint.load(config, platform.state_dir)
        with LocalServer(create_app([endpoint])) as server:
            request_ids = [_warm_up(server.url, config.name, model) for model in endpoint.models.values()]
        if config.inference_table.enabled:
            self._check_logged(config, request_ids)
        log.info("endpoint %s answers; serve it with `mlops serve -t %s`", config.name, platform.target)

    def serves(self, config: EndpointConfig) -> bool:
        """Whether the recorded spec already serves `config` (`spec.same_service`)."""
        recorded = load_endpoint_spec(self._platform.state_dir, config.name)
        return recorded is not None and same_service(recorded, config)

    def delete(self, name: str) -> bool:
        """Forget the recorded endpoint; False when none was recorded."""
        return delete_endpoint_spec(self._platform.state_dir, name)

    def query(self, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Serve the recorded endpoint on loopback for one request (like `mlops serve` does)."""
        specs = {spec.name: spec for spec in load_endpoint_specs(self._platform.state_dir)}
        if name not in specs:
            raise EndpointDeploymentError(
                f"endpoint {name} is not deployed locally (known: {sorted(specs)}): "
                "run the pipeline job first"
            )
        endpoint = Endpoint.load(specs[name], self._platform.state_dir)
        body = json.dumps({"dataframe_records": records}, default=str).encode()
        with LocalServer(create_app([endpoint])) as server:
            request = urllib.request.Request(
                f"{server.url}/serving-endpoints/{name}/invocations",
                data=body,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                served = response.headers[SERVED_MODEL_NAME_HEADER]
                return {**json.loads(response.read()), SERVED_MODEL_NAME_HEADER: served}

    def _check_logged(self, config: EndpointConfig, request_ids: list[str]) -> None:
        table = self._platform.table_name(config.inference_table.payload_table)
        spark = self._platform.spark
        spark.catalog.refreshTable(table)
        rows = spark.table(table)
        found = rows.where(rows.databricks_request_id.isin(request_ids)).count()
        if found != len(request_ids):
            raise EndpointDeploymentError(
                f"the inference table {config.inference_table.payload_table} has {found} of the "
                f"{len(request_ids)} check requests"
            )


def record_served_entities(platform: LocalPlatform, config: EndpointConfig) -> None:
    """Append `config`'s served entities not recorded yet to the local `system.serving.served_entities`
    (a change history, as on Databricks), so monitoring can name the ids the endpoint logs."""
    rows = platform.spark.createDataFrame(
        served_entity_rows(config, datetime.now(UTC)), schema=SERVED_ENTITIES_DDL
    )
    if platform.table_exists(SERVED_ENTITIES_TABLE):
        known = platform.read_table(SERVED_ENTITIES_TABLE).select("served_entity_id")
        rows = rows.join(known, on="served_entity_id", how="left_anti")
    if not rows.isEmpty():
        platform.save_table(rows, SERVED_ENTITIES_TABLE, mode="append")


def _warm_up(url: str, endpoint: str, model: ServedModel) -> str:
    """Send the model's input example to the served entity; returns the request id."""
    try:
        example_path = mlflow.artifacts.download_artifacts(
            f"{model.spec.model_uri}/serving_input_example.json"
        )
    except (MlflowException, OSError):
        raise EndpointDeploymentError(
            f"{model.spec.model_uri} has no input example to check the endpoint with: "
            "log the model with input_example"
        ) from None
    with open(example_path, "rb") as file:
        body = file.read()
    rows = len(parse_invocation(json.loads(body), model.schema).frame)
    request = urllib.request.Request(
        f"{url}/serving-endpoints/{endpoint}/served-models/{model.name}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
            request_id = response.headers["x-request-id"]
    except urllib.error.HTTPError as error:
        raise EndpointDeploymentError(
            f"{endpoint}/{model.name} refused its input example: {error.code} {error.read().decode()}"
        ) from None
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != rows:
        raise EndpointDeploymentError(f"{endpoint}/{model.name} answered {answer} to {rows} example rows")
    log.info("%s/%s answered its input example (%d rows)", endpoint, model.name, rows)
    return request_id
