"""Register the sticky A/B model (`ab_model.py`) for a champion / challenger pair.

The same code runs on Databricks (Unity Catalog registry) and locally (the UC-strict local registry).
A version whose tags match the pair, key column and share is reused, so redeploying registers
nothing new.

A champion that looks its features up is served so as the A/B model too, so clients send it keys
alone: logged with `fe.log_model` (Databricks), the A/B model is logged with `fe.log_model` and
the champion's feature spec (`feature_spec_path`); logged with the local feature store's lookups
(MLmodel metadata), it is logged with the same lookups and the champion's signature (request inputs
required, features optional), so the local endpoint looks the features up before it predicts.
Either way the A/B model takes the champion's columns alone, so its key must be one of the
champion's request inputs (the deploy task refuses any other); only a champion without lookups
gets the key as an extra column.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import AnyType, Array

from mlops_template.platform.feature_store import FEATURE_LOOKUPS_METADATA
from mlops_template.serving import ab_model
from mlops_template.serving.spec import StickyABSpec, ab_model_name

log = logging.getLogger(__name__)

FEATURE_SPEC_FILE = "feature_spec.yaml"  # written by fe.log_model beside the model it wraps


def register_ab_model(
    model_name: str,
    *,
    champion_version: str,
    challenger_version: str,
    key_column: str,
    challenger_share: float,
    experiment_id: str,
) -> StickyABSpec:
    """The sticky A/B model over two versions of `model_name`, registered as `<model_name>_ab`."""
    client = MlflowClient()
    tags = {
        "champion_version": champion_version,
        "challenger_version": challenger_version,
        "key_column": key_column,
        "challenger_share": repr(float(challenger_share)),
    }
    name = ab_model_name(model_name)
    version = _matching_version(client, name, tags) or _log_ab_model(
        model_name, name, tags, experiment_id=experiment_id
    )
    return StickyABSpec(
        key_column=key_column,
        challenger_share=challenger_share,
        champion_version=champion_version,
        challenger_version=challenger_version,
        model_version=version,
    )


def _matching_version(client: MlflowClient, name: str, tags: dict[str, str]) -> str | None:
    """The newest version of `name` whose tags match, if any.

    Unity Catalog's `search_model_versions` returns versions without tags (MLflow's
    `ModelVersionSearch`), so each candidate's tags are read with `get_model_version`.
    """
    found = client.search_model_versions(f"name='{name}'")
    for number in sorted((int(version.version) for version in found), reverse=True):
        version = client.get_model_version(name, str(number))
        if all(version.tags.get(key) == value for key, value in tags.items()):
            log.info("reusing %s version %s for this champion / challenger pair", name, number)
            return str(number)
    return None


def _log_ab_model(model_name: str, name: str, tags: dict[str, str], *, experiment_id: str) -> str:
    key_column = tags["key_column"]
    with tempfile.TemporaryDirectory(prefix="ab-model-") as tmp:
        variants = {
            variant: mlflow.artifacts.download_artifacts(
                f"models:/{model_name}/{tags[f'{variant}_version']}", dst_path=str(Path(tmp, variant))
            )
            for variant in (ab_model.CHAMPION, ab_model.CHALLENGER)
        }
        champion = Model.load(variants[ab_model.CHAMPION])
        inputs = champion.get_input_schema()
        if inputs is None or not inputs.has_input_names():
            raise ValueError(
                f"{model_name} version {tags['champion_version']} needs a signature with named columns"
            )
        lookups = _lookups_metadata(champion)
        if lookups is None and key_column not in inputs.input_names():
            # Any type: the A/B model hashes the key's text (`ab_model.key_bucket`), so a numeric id
            # (a long row id) is as good a key as a string. Unity Catalog asks only that the
            # signature has inputs and outputs (mlflow store/_unity_catalog/registry/rest_store.py,
            # `_validate_model_signature`).
            inputs = Schema([*inputs.inputs, ColSpec(AnyType(), key_column)])
        options: dict[str, Any] = {
            "python_model": Path(ab_model.__file__),
            "artifacts": variants,
            "model_config": {"key_column": key_column, "challenger_share": float(tags["challenger_share"])},
            "pip_requirements": _requirements(variants.values()),
        }
        feature_spec = Path(variants[ab_model.CHAMPION], *ab_model.FEATURE_STORE_DATA, FEATURE_SPEC_FILE)
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=f"{name.rsplit('.', 1)[-1]} registration"
        ):
            if feature_spec.is_file():
                version = _log_with_feature_spec(name, feature_spec, _output_schema(champion), options)
            else:
                info = mlflow.pyfunc.log_model(
                    name="ab_model",
                    signature=ModelSignature(inputs=inputs, outputs=_output_schema(champion)),
                    input_example=_input_example(champion, variants[ab_model.CHAMPION], key_column),
                    metadata=lookups,
                    registered_model_name=name,
                    **options,
                )
                version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    log.info("registered %s version %s (%s)", name, version, tags)
    return version


def _log_with_feature_spec(name: str, feature_spec: Path, outputs: Schema, options: dict[str, Any]) -> str:
    """Log the A/B model with `fe.log_model(feature_spec_path=...)` (databricks/ml_features/
    _training_scoring_client: the spec is saved beside the A/B model, which becomes its
    `raw_model`, and the signature is derived from the spec) and register it; its version."""
    from databricks.feature_engineering import FeatureEngineeringClient

    info = FeatureEngineeringClient().log_model(
        model=options.pop("python_model"),
        artifact_path="ab_model",
        flavor=mlflow.pyfunc,
        feature_spec_path=str(feature_spec),
        output_schema=outputs,
        **options,
    )
    return str(mlflow.register_model(info.model_uri, name).version)


def _lookups_metadata(champion: Model) -> dict[str, Any] | None:
    """The champion's local feature lookups, for the A/B model's MLmodel metadata (None: none)."""
    lookups = (champion.metadata or {}).get(FEATURE_LOOKUPS_METADATA)
    return {FEATURE_LOOKUPS_METADATA: lookups} if lookups else None


def _output_schema(champion: Model) -> Schema:
    """`prediction` as the champion answers it (a number, or a list of class probabilities), `variant`."""
    prediction = Array(DataType.double) if _answers_per_class(champion) else DataType.double
    return Schema([ColSpec(prediction, "prediction"), ColSpec(DataType.string, "variant")])


def _answers_per_class(champion: Model) -> bool:
    """Whether the champion's signature answers several values per row: a classifier's probabilities
    (a `(-1, classes)` tensor, as `predict_proba` output is inferred) or several columns."""
    outputs = champion.get_output_schema()
    if outputs is None:
        return False
    if outputs.is_tensor_spec():
        shapes = [tensor.shape for tensor in outputs.inputs]
        return len(shapes) == 1 and len(shapes[0]) == 2 and shapes[0][1] != 1
    return len(outputs.inputs) > 1


def _input_example(champion: Model, path: str, key_column: str) -> pd.DataFrame | None:
    """The champion's input example, with a distinct key per row when the key is an extra column."""
    example = champion.load_input_example(path)
    if example is None:
        return None
    example = pd.DataFrame(example)
    if key_column not in example.columns:
        example[key_column] = [f"key-{row}" for row in range(len(example))]
    return example


def _requirements(model_dirs: Iterable[str]) -> list[str]:
    """The union of the variants' pip requirements (their `requirements.txt`), in order."""
    lines: dict[str, None] = {}
    for model_dir in model_dirs:
        requirements = Path(model_dir, "requirements.txt")
        if requirements.is_file():
            lines |= dict.fromkeys(line.strip() for line in requirements.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")] or ["mlflow"]
