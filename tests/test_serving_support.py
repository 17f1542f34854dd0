"""Helpers of the serving tests (no tests here): small models on neutral synthetic inputs (a
regression, a classifier and one that always fails) in the session's registry, a local endpoint
served on loopback, and JSON requests to it."""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import requests
from databricks.sdk import WorkspaceClient
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline

from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.serving.app import create_app
from mlops_laptop.serving.control_plane import ServingSettings
from mlops_laptop.serving.endpoint import BatchSettings, Endpoint, ServedModel, table_writer
from mlops_laptop.serving.local_host import Host, open_control_plane
from mlops_laptop.serving.server import LocalServer
from mlops_template.registry.experiment import EXPERIMENT
from mlops_template.registry.versions import GATE_OUTCOME_TAG
from mlops_template.serving.spec import EndpointConfig, InferenceTableSpec, StickyABSpec, endpoint_config
from mlops_template.tasks.common import build_config
from mlops_template.tasks.deploy import DeployConfig, run

INPUT_COLUMNS = (
    "distance",
    "zone",
    "hour",
    "weekday",
    "mean_value_window_1h",
    "count_window_1h",
    "count_window_30m",
    "is_weekend",
)
_INTEGER_COLUMNS = {"zone", "hour", "weekday", "is_weekend"}


def model_inputs(rows: int, seed: int = 0) -> pd.DataFrame:
    """Neutral model inputs: doubles (one a distance, three window-like aggregates) and int32 codes."""
    rng = np.random.default_rng(seed)
    values = {
        "distance": rng.gamma(2.0, 1.5, rows),
        "zone": rng.integers(1, 50, rows),
        "hour": rng.integers(0, 24, rows),
        "weekday": rng.integers(0, 7, rows),
        "mean_value_window_1h": rng.uniform(5, 30, rows),
        "count_window_1h": rng.integers(1, 50, rows).astype("float64"),
        "count_window_30m": rng.integers(1, 50, rows).astype("float64"),
        "is_weekend": rng.integers(0, 2, rows),
    }
    frame = pd.DataFrame({column: values[column] for column in INPUT_COLUMNS})
    return frame.astype({column: "int32" for column in _INTEGER_COLUMNS})


def register_regression_model(
    platform: LocalPlatform, name: str, *, slope: float, aliases: tuple[str, ...] = ()
) -> str:
    """Fit imputer + linear regression on a target linear in `distance`; returns the version."""
    inputs = model_inputs(300, seed=int(slope * 10))
    target = 2.5 + slope * inputs["distance"] + 0.1 * inputs["mean_value_window_1h"]
    model = make_pipeline(SimpleImputer(), LinearRegression()).fit(inputs, target)
    return _register(platform, name, model, inputs, model.predict(inputs), aliases, predict_fn="predict")


def register_classifier(
    platform: LocalPlatform, name: str, *, weight: float, aliases: tuple[str, ...] = ()
) -> str:
    """Fit imputer + logistic regression on a label that grows likelier with `distance`, logged to
    return per-class probabilities as the pipeline logs classifiers; returns the version."""
    inputs = model_inputs(300, seed=int(weight * 10))
    noise = np.random.default_rng(int(weight * 10)).normal(0.0, 1.0, len(inputs))
    label = (weight * (inputs["distance"] - 3.0) + noise > 0).astype("int64")
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(inputs, label)
    probabilities = model.predict_proba(inputs)
    return _register(platform, name, model, inputs, probabilities, aliases, predict_fn="predict_proba")


def _register(
    platform: LocalPlatform,
    name: str,
    model: BaseEstimator,
    inputs: pd.DataFrame,
    output: np.ndarray,
    aliases: tuple[str, ...],
    *,
    predict_fn: str,
) -> str:
    experiment_id = platform.experiment_id(f"/serving-tests/{name}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        signature = infer_signature(inputs, output)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=inputs.head(3),
            pip_requirements=["scikit-learn"],
            skops_trusted_types=["numpy.dtype"],
            registered_model_name=name,
            pyfunc_predict_fn=predict_fn,
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
    """Register a FailingModel with the neutral inputs' signature; returns the version."""
    inputs = model_inputs(3)
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
        local_endpoint(
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


def local_endpoint(
    config: EndpointConfig,
    state_dir: Path,
    *,
    batching: BatchSettings | None = None,
    table_flush_seconds: float = 60.0,
    rng: random.Random | None = None,
) -> Endpoint:
    """The data plane of `config` alone (no control plane): its models loaded (their lookups
    reading the online snapshots of `state_dir`), its table writer."""
    models = {
        entity.name: ServedModel.load(config.name, entity, batching or BatchSettings(), state_dir)
        for entity in config.served_entities
    }
    table = config.inference_table
    writer = (
        table_writer(state_dir, table.payload_table, flush_seconds=table_flush_seconds)
        if table.enabled
        else None
    )
    return Endpoint(config.name, models, list(config.routes), writer, rng=rng)


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
    """Register two versions (champion slope 2, challenger slope 3, a running experiment: the gate's
    outcome `experiment`), then run the deploy task."""
    platform.configure_mlflow()
    register_regression_model(platform, model, slope=2.0, aliases=("champion",))
    challenger = register_regression_model(platform, model, slope=3.0, aliases=("challenger",))
    mlflow.MlflowClient().set_model_version_tag(model, challenger, GATE_OUTCOME_TAG, EXPERIMENT)
    run(platform, build_config(DeployConfig, [f"--model-name={model}", *arguments]))


def logged_endpoint(
    name: str,
    model: str,
    champion: str,
    challenger: str | None = None,
    challenger_percent: int = 0,
    sticky_ab: StickyABSpec | None = None,
    environment_vars: dict[str, str] | None = None,
) -> EndpointConfig:
    """A small endpoint spec with its inference table on, in the model's own schema; its served
    entities get `environment_vars`."""
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
        sticky_ab=sticky_ab,
        environment_vars=environment_vars,
    )


@dataclass
class LocalWorkspace:
    client: WorkspaceClient
    url: str
    state_dir: Path


@contextmanager
def local_workspace(state_dir: Path, *, preload: bool = True) -> Iterator[LocalWorkspace]:
    """A control plane over `state_dir` on loopback (the session's registry) and the SDK client of it."""
    control_plane = open_control_plane(state_dir, ServingSettings(table_flush_seconds=0.1, preload=preload))
    with LocalServer(create_app(control_plane=control_plane)) as server:
        yield LocalWorkspace(Host(server.url, "local").workspace_client(), server.url, state_dir)
