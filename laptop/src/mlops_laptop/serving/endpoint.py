"""A local endpoint: its served models loaded from the registry, its router and inference table."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from mlops_laptop.platform.online_store import MissingOnlineTableError
from mlops_laptop.platform.warehouse import local_table_dir
from mlops_laptop.serving.batching import MicroBatcher, split_rows
from mlops_laptop.serving.feature_lookup import (
    FEATURE_TRACING_VARIABLE,
    FeatureLookups,
    FeatureLookupSetupError,
    LookupRecord,
)
from mlops_laptop.serving.inference_table import InferenceTableWriter
from mlops_laptop.serving.invocation import InvocationError, check_params, conform, parse_invocation
from mlops_laptop.serving.router import TrafficRouter
from mlops_template.platform.feature_store import model_lookups
from mlops_template.serving.served_entities import served_entity_id
from mlops_template.serving.spec import RouteSpec, ServedEntitySpec

log = logging.getLogger(__name__)


class UnservableModelError(ValueError):
    """A model the local endpoint cannot serve (it needs a signature with named columns)."""


@dataclass
class BatchSettings:
    """Micro-batching bounds of every served model of an endpoint."""

    max_wait_ms: float = 3.0
    max_batch_rows: int = 4096


@dataclass(frozen=True)
class Scored:
    """A model call's answer: the predictions and, for a model with feature lookups, what was
    looked up for its rows."""

    predictions: Any
    lookup: LookupRecord | None = None

    def split(self, lengths: list[int]) -> list[Scored]:
        """One part per request of a batch, in order (`MicroBatcher` cuts its outputs so)."""
        predictions = split_rows(self.predictions, lengths)
        if self.lookup is None:
            return [Scored(part) for part in predictions]
        bounds = itertools.pairwise(np.cumsum([0, *lengths]))
        return [
            Scored(part, self.lookup.rows(start, end))
            for part, (start, end) in zip(predictions, bounds, strict=True)
        ]


class ServedModel:
    """One served entity: a registered model version, its id, its feature lookups (if it was
    logged with some) and the batcher in front of it."""

    def __init__(
        self,
        spec: ServedEntitySpec,
        entity_id: str,
        model: PyFuncModel,
        batching: BatchSettings,
        lookups: FeatureLookups | None = None,
    ) -> None:
        self.spec = spec
        self.entity_id = entity_id
        self.model = model
        self.schema = _input_schema(spec, model)
        self.lookups = lookups
        self._raw_predict = _implementation_predict(model)
        self.batcher = MicroBatcher(
            self._predict,
            name=spec.name,
            max_wait_ms=batching.max_wait_ms,
            max_batch_rows=batching.max_batch_rows,
        )

    @classmethod
    def load(
        cls, endpoint_name: str, spec: ServedEntitySpec, batching: BatchSettings, state_dir: Path
    ) -> ServedModel:
        """Load the model version from the (already configured) MLflow registry, with the online
        snapshots of `state_dir` its feature lookups read (`UnservableModelError` when one is missing)."""
        log.info("endpoint %s: loading %s as %s", endpoint_name, spec.model_uri, spec.name)
        model = mlflow.pyfunc.load_model(spec.model_uri)
        lookups = None
        if specs := model_lookups(model.metadata):
            try:
                lookups = FeatureLookups.open(specs, state_dir, _input_schema(spec, model))
            except (MissingOnlineTableError, FeatureLookupSetupError) as error:
                raise UnservableModelError(f"{spec.model_uri} looks features up, but {error}") from None
        return cls(spec, served_entity_id(endpoint_name, spec), model, batching, lookups)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def traces_features(self) -> bool:
        """Whether its inference records carry the feature lookup DataFrame: only with the served
        entity's `ENABLE_FEATURE_TRACING=true`, as on Databricks."""
        return self.lookups is not None and self.spec.environment_vars.get(FEATURE_TRACING_VARIABLE) == "true"

    def check_params(self, params: dict[str, Any] | None) -> None:
        """Refuse params the model's signature does not accept (a client error, checked by MLflow)."""
        check_params(params, self.model.metadata.get_params_schema())

    def check_example(self) -> int:
        """Predict the model's logged input example, as a container's health check would; returns
        the example's row count, or raises `UnservableModelError` saying what failed."""
        try:
            path = mlflow.artifacts.download_artifacts(f"{self.spec.model_uri}/serving_input_example.json")
        except (MlflowException, OSError):
            raise UnservableModelError(
                f"{self.spec.model_uri} has no input example to check it with: "
                "log the model with input_example"
            ) from None
        with open(path, "rb") as file:
            body = file.read()
        try:
            invocation = parse_invocation(json.loads(body), self.schema)
            output = self._predict(invocation.frame, invocation.params).predictions
        except InvocationError as error:
            raise UnservableModelError(f"{self.spec.model_uri} refused its input example: {error}") from None
        except Exception as error:  # the model failed: the update must fail, saying why
            raise UnservableModelError(
                f"{self.spec.model_uri} failed on its input example: {type(error).__name__}: {error}"
            ) from None
        rows = len(invocation.frame)
        if len(output) != rows:
            raise UnservableModelError(
                f"{self.spec.model_uri} answered {len(output)} rows to its {rows} example rows"
            )
        return rows

    def _predict(self, frame: pd.DataFrame, params: dict[str, Any] | None) -> Scored:
        """The batch's predictions: MLflow's schema enforcement of the request, then for a model
        with lookups the looked-up features and the model itself, as Databricks' feature store
        wrapper calls its raw model (logged without an input schema by `fe.log_model`,
        `drop_signature_inputs_and_invalid_params`), so a missing integer feature reaches it as NaN."""
        conformed = conform(frame, self.schema)
        if self.lookups is None:
            return Scored(self.model.predict(conformed, params=params))
        augmented, record = self.lookups.augment(conformed)
        return Scored(self._raw_predict(augmented, params), record)


class Endpoint:
    """What one endpoint serves: its served models, the traffic router over its routes and the
    inference-table writer (None when the table is off). It counts the requests routed to it until
    their inference record is written, so a replaced endpoint's writer closes only once drained."""

    def __init__(
        self,
        name: str,
        models: dict[str, ServedModel],
        routes: list[RouteSpec],
        table: InferenceTableWriter | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.models = models
        self.routes = routes
        self.router = TrafficRouter(routes, rng)
        self.table = table
        self.in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Count one request from its routing here until its inference record is written."""
        self.in_flight += 1
        self._drained.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._drained.set()

    async def drained(self) -> None:
        """Return once no request routed here is in flight."""
        await self._drained.wait()

    def start(self) -> None:
        """Start the batchers (on the running event loop) and the table writer."""
        for model in self.models.values():
            model.batcher.start()
        if self.table is not None:
            self.table.start()


def _input_schema(spec: ServedEntitySpec, model: PyFuncModel) -> Schema:
    """The model's input schema, which must name its columns."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        raise UnservableModelError(
            f"{spec.model_uri} has no signature with named input columns: log it with a signature"
        )
    return schema


def _implementation_predict(model: PyFuncModel) -> Callable[[pd.DataFrame, dict[str, Any] | None], Any]:
    """The model implementation's predict function (the pyfunc flavor's `predict_fn`), which
    `PyFuncModel.predict` calls after enforcing the signature (mlflow/pyfunc/__init__.py)."""
    function = getattr(
        model._model_impl,  # MLflow's stable developer API to the implementation
        model.metadata.flavors[mlflow.pyfunc.FLAVOR_NAME].get("predict_fn", "predict"),
    )
    named = inspect.signature(function).parameters.get("params")
    if named is not None and named.kind is not inspect.Parameter.VAR_KEYWORD:
        return lambda frame, params: function(frame, params=params)
    # A scikit-learn Pipeline's `predict_proba(X, **params)` routes keywords to its steps' methods
    # (metadata routing), which take none: MLflow's params are not for it.
    return lambda frame, _params: function(frame)


def table_writer(state_dir: Path, payload_table: str, *, flush_seconds: float) -> InferenceTableWriter:
    """The writer of the payload table's files under the local warehouse (not started)."""
    directory = local_table_dir(state_dir, payload_table)
    return InferenceTableWriter(directory, payload_table, flush_seconds=flush_seconds)
