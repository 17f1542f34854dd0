"""Helpers of the serving tests (no tests here): a small fare model (and one that always fails) in
the session's registry, a local endpoint served on loopback, and JSON requests to it."""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import requests
from mlflow.models import infer_signature
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.serving.app import create_app
from mlops_laptop.serving.endpoint import BatchSettings, Endpoint
from mlops_laptop.serving.server import LocalServer
from mlops_template.problem.features import MODEL_INPUT_COLUMNS
from mlops_template.serving.spec import EndpointConfig, InferenceTableSpec, endpoint_config
from mlops_template.tasks.common import build_config
from mlops_template.tasks.deploy import DeployConfig, run

_INTEGER_COLUMNS = {"pickup_zip", "dropoff_zip", "pickup_hour", "pickup_weekday", "dropoff_is_weekend"}


def fare_inputs(rows: int, seed: int = 0) -> pd.DataFrame:
    """Model inputs with the MODEL_INPUT_COLUMNS names and plausible types."""
    rng = np.random.default_rng(seed)
    values = {
        "trip_distance": rng.gamma(2.0, 1.5, rows),
        "pickup_zip": rng.integers(10001, 10050, rows),
        "dropoff_zip": rng.integers(10001, 10050, rows),
        "pickup_hour": rng.integers(0, 24, rows),
        "pickup_weekday": rng.integers(0, 7, rows),
        "mean_fare_window_1h_pickup_zip": rng.uniform(5, 30, rows),
        "count_trips_window_1h_pickup_zip": rng.integers(1, 50, rows).astype("float64"),
        "count_trips_window_30m_dropoff_zip": rng.integers(1, 50, rows).astype("float64"),
        "dropoff_is_weekend": rng.integers(0, 2, rows),
    }
    frame = pd.DataFrame({column: values[column] for column in MODEL_INPUT_COLUMNS})
    return frame.astype({column: "int32" for column in _INTEGER_COLUMNS})


def register_fare_model(
    platform: LocalPlatform, name: str, *, slope: float, aliases: tuple[str, ...] = ()
) -> str:
    """Fit imputer + linear regression on generated fares, log and register it; returns the version."""
    inputs = fare_inputs(300, seed=int(slope * 10))
    fares = 2.5 + slope * inputs["trip_distance"] + 0.1 * inputs["mean_fare_window_1h_pickup_zip"]
    model = make_pipeline(SimpleImputer(), LinearRegression()).fit(inputs, fares)
    experiment_id = platform.experiment_id(f"/serving-tests/{name}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(inputs, model.predict(inputs))
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=inputs.head(3),
            pip_requirements=["scikit-learn"],
            skops_trusted_types=["numpy.dtype"],
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    for alias in aliases:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return version


class FailingModel(mlflow.pyfunc.PythonModel):
    """A model with a bug: it raises on every input, however valid."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        raise RuntimeError("the model has a bug")


def register_failing_model(platform: LocalPlatform, name: str) -> str:
    """Register a FailingModel with the fare inputs' signature; returns the version."""
    inputs = fare_inputs(3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(inputs, np.zeros(len(inputs)))
    with (
        mlflow.start_run(experiment_id=platform.experiment_id(f"/serving-tests/{name}")),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=".*An input example was not provided")  # predict raises
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FailingModel(),
            signature=signature,
            pip_requirements=["mlflow"],
            registered_model_name=name,
        )
    return str(info.registered_model_version)


@contextmanager
def serving(
    configs: list[EndpointConfig],
    state_dir: Path,
    *,
    token: str | None = None,
    batching: BatchSettings | None = None,
    table_flush_seconds: float = 60.0,
    seed: int = 0,
) -> Iterator[tuple[str, list[Endpoint]]]:
    """The endpoints served on an ephemeral loopback port; yields the base URL and the endpoints.

    Each endpoint routes requests with its own generator seeded by `seed`: traffic splits repeat.
    """
    endpoints = [
        Endpoint.load(
            config,
            state_dir,
            batching=batching,
            table_flush_seconds=table_flush_seconds,
            rng=random.Random(seed),
        )
        for config in configs
    ]
    with LocalServer(create_app(endpoints, token=token)) as server:
        yield server.url, endpoints


def records_body(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    return {"dataframe_records": json.loads(frame.to_json(orient="records")), **extra}


def invoke(
    url: str, endpoint: str, body: Any, *, served: str | None = None, **kwargs: Any
) -> requests.Response:
    """POST a JSON body (or raw bytes / str with their own headers) to an endpoint's invocations."""
    path = f"/serving-endpoints/{endpoint}" + (f"/served-models/{served}" if served else "") + "/invocations"
    if isinstance(body, bytes | str):
        return requests.post(url + path, data=body, timeout=60, **kwargs)
    return requests.post(url + path, json=body, timeout=60, **kwargs)


def deploy_champion_and_challenger(platform: LocalPlatform, model: str, *arguments: str) -> None:
    """Register two versions (champion slope 2, challenger slope 3), then run the deploy task."""
    platform.configure_mlflow()
    register_fare_model(platform, model, slope=2.0, aliases=("champion",))
    register_fare_model(platform, model, slope=3.0, aliases=("challenger",))
    run(platform, build_config(DeployConfig, [f"--model-name={model}", *arguments]))


def logged_endpoint(
    name: str, model: str, champion: str, challenger: str | None = None, challenger_percent: int = 0
) -> EndpointConfig:
    """A small endpoint spec with its inference table on, in the model's own schema."""
    catalog, schema, _ = model.split(".")
    return endpoint_config(
        endpoint_name=name,
        model_name=model,
        champion_version=champion,
        challenger_version=challenger,
        challenger_traffic_percent=challenger_percent,
        workload_size="Small",
        scale_to_zero=True,
        inference_table=InferenceTableSpec(
            enabled=True, catalog_name=catalog, schema_name=schema, table_name_prefix=name.replace("-", "_")
        ),
        git_sha="test",
    )
