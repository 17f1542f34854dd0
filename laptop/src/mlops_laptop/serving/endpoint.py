"""A local endpoint: its served models loaded from the registry, its router and inference table."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from mlops_laptop.platform.warehouse import local_table_dir
from mlops_laptop.serving.batching import MicroBatcher
from mlops_laptop.serving.inference_table import InferenceTableWriter
from mlops_laptop.serving.invocation import check_params, conform
from mlops_laptop.serving.router import TrafficRouter
from mlops_template.serving.served_entities import served_entity_id
from mlops_template.serving.spec import EndpointConfig, ServedEntitySpec

log = logging.getLogger(__name__)


class UnservableModelError(ValueError):
    """A model the local endpoint cannot serve (it needs a signature with named columns)."""


@dataclass
class BatchSettings:
    """Micro-batching bounds of every served model of an endpoint."""

    max_wait_ms: float = 3.0
    max_batch_rows: int = 4096


class ServedModel:
    """One served entity: a registered model version, its id and the batcher in front of it."""

    def __init__(
        self, spec: ServedEntitySpec, entity_id: str, model: PyFuncModel, batching: BatchSettings
    ) -> None:
        schema = model.metadata.get_input_schema()
        if schema is None or not schema.has_input_names():
            raise UnservableModelError(
                f"{spec.model_uri} has no signature with named input columns: log it with a signature"
            )
        self.spec = spec
        self.entity_id = entity_id
        self.model = model
        self.schema: Schema = schema
        self.batcher = MicroBatcher(
            self._predict,
            name=spec.name,
            max_wait_ms=batching.max_wait_ms,
            max_batch_rows=batching.max_batch_rows,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    def check_params(self, params: dict[str, Any] | None) -> None:
        """Refuse params the model's signature does not accept (a client error, checked by MLflow)."""
        check_params(params, self.model.metadata.get_params_schema())

    def _predict(self, frame: pd.DataFrame, params: dict[str, Any] | None) -> Any:
        return self.model.predict(conform(frame, self.schema), params=params)


class Endpoint:
    """The served models of one endpoint spec, the traffic router and the inference-table writer."""

    def __init__(
        self,
        config: EndpointConfig,
        models: dict[str, ServedModel],
        table: InferenceTableWriter | None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.models = models
        self.router = TrafficRouter(config.routes, rng)
        self.table = table

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    def load(
        cls,
        config: EndpointConfig,
        state_dir: Path,
        *,
        batching: BatchSettings | None = None,
        table_flush_seconds: float = 1.0,
        rng: random.Random | None = None,
    ) -> Endpoint:
        """Load every served entity from the (already configured) MLflow registry; `rng` draws the
        served entity of each request (default: seeded from the system, as Databricks routes)."""
        models = {}
        for entity in config.served_entities:
            log.info("endpoint %s: loading %s as %s", config.name, entity.model_uri, entity.name)
            model = mlflow.pyfunc.load_model(entity.model_uri)
            entity_id = served_entity_id(config.name, entity)
            models[entity.name] = ServedModel(entity, entity_id, model, batching or BatchSettings())
        table = None
        if config.inference_table.enabled:
            directory = local_table_dir(state_dir, config.inference_table.payload_table)
            table = InferenceTableWriter(directory, flush_seconds=table_flush_seconds)
        return cls(config, models, table, rng=rng)
