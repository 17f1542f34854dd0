"""A local MLflow model registry that keeps Unity Catalog's rules (local platform only).

MLflow finds it through the `mlflow.model_registry_store` entry point for the `local-uc` URI
scheme (pyproject.toml), so every process that uses the registry URI `local-uc:///<path>.db` -
tasks, the local endpoint, `spark_udf`, notebooks - gets it. It stores everything in MLflow's
SQLite store at `sqlite:///<path>.db` and refuses what the Unity Catalog registry refuses, with
MLflow's own UC checks where they exist (mlflow/store/_unity_catalog/registry/rest_store.py):

- model names have three levels, `catalog.schema.model`, without the characters UC forbids;
- a model version needs a signature with inputs and outputs;
- no stages: `transition_model_version_stage` and `get_latest_versions` fail (use aliases);
- `search_model_versions` / `search_registered_models` return MLflow's `ModelVersionSearch` /
  `RegisteredModelSearch`, whose `tags` and `aliases` cannot be read (use `get_model_version`);
- alias names are stored in lower case, as UC stores every object name.
"""

from __future__ import annotations

import re
import tempfile
from types import ModuleType

from mlflow.entities.model_registry import (
    ModelVersion,
    ModelVersionSearch,
    RegisteredModel,
    RegisteredModelSearch,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry import (
    SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT,
    SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils._unity_catalog_utils import split_uc_model_name

SCHEME = "local-uc"
_SQLITE = "sqlite"
# https://docs.databricks.com/aws/en/data-governance/unity-catalog/requirements
# (securable object naming requirements): no period, space, forward slash, ASCII control
# characters or DELETE; at most 255 characters.
_FORBIDDEN = re.compile(r"[ /\x00-\x1f\x7f]")
_MAX_NAME_LENGTH = 255
_MLMODEL = "MLmodel"


def registry_uri(sqlite_uri: str) -> str:
    """The `local-uc:` registry URI over the SQLite database of `sqlite_uri`."""
    scheme, _, rest = sqlite_uri.partition(":")
    if scheme != _SQLITE:
        raise ValueError(f"expected a sqlite: URI, got '{sqlite_uri}'")
    return f"{SCHEME}:{rest}"


def uc_model_name(name: str) -> str:
    """`name` if Unity Catalog accepts it as a registered model name, else an error saying why."""
    catalog, schema, model = split_uc_model_name(name)
    for part in (catalog, schema, model):
        if _FORBIDDEN.search(part) or len(part) > _MAX_NAME_LENGTH:
            raise MlflowException(
                f"Not a valid Unity Catalog model name: '{name}'. Each of catalog, schema and model "
                f"must be at most {_MAX_NAME_LENGTH} characters, without spaces, slashes or control "
                "characters.",
                INVALID_PARAMETER_VALUE,
            )
    return name


def _uc_stores() -> ModuleType:
    """MLflow's UC registry store module, imported when needed (it pulls in the UC protos)."""
    from mlflow.store._unity_catalog.registry import rest_store

    return rest_store


class UnityCatalogLocalStore(SqlAlchemyStore):
    """MLflow's SQLite registry store with the Unity Catalog registry's rules."""

    def __init__(self, store_uri: str, tracking_uri: str | None = None) -> None:
        scheme, _, rest = store_uri.partition(":")
        if scheme != SCHEME:
            raise MlflowException(f"expected a {SCHEME}: registry URI, got '{store_uri}'")
        self.tracking_uri = tracking_uri
        super().__init__(f"{_SQLITE}:{rest}")

    # Names -----------------------------------------------------------------------------------

    def create_registered_model(self, name, tags=None, description=None, deployment_job_id=None):
        return super().create_registered_model(uc_model_name(name), tags, description, deployment_job_id)

    def rename_registered_model(self, name, new_name):
        return super().rename_registered_model(name, uc_model_name(new_name))

    # Model versions --------------------------------------------------------------------------

    def create_model_version(
        self,
        name,
        source,
        run_id=None,
        tags=None,
        run_link=None,
        description=None,
        local_model_path=None,
        model_id=None,
    ):
        """Refused, as in UC, without a signature that has inputs and outputs."""
        _uc_stores()._require_arg_unspecified(arg_name="run_link", arg_value=run_link)
        uc_model_name(name)
        self._require_signature(source, local_model_path)
        return super().create_model_version(
            name, source, run_id, tags, None, description, local_model_path, model_id
        )

    def _require_signature(self, source: str, local_model_path: str | None) -> None:
        """UC's own check (`UcModelRegistryStore._validate_model_signature`) on the model's MLmodel."""
        validate = _uc_stores().UcModelRegistryStore._validate_model_signature
        if local_model_path is not None:
            validate(self, local_model_path)
            return
        with tempfile.TemporaryDirectory(prefix="uc-signature-") as tmp:
            try:
                repository = get_artifact_repository(source, tracking_uri=self.tracking_uri)
                repository.download_artifacts(_MLMODEL, dst_path=tmp)
            except Exception as error:
                raise MlflowException(
                    f"Cannot read the MLmodel file of '{source}' to check its signature, which Unity "
                    f"Catalog requires: {error}. Register the URI of a logged MLflow model.",
                    INVALID_PARAMETER_VALUE,
                ) from error
            validate(self, tmp)

    def transition_model_version_stage(self, name, version, stage, archive_existing_versions=False):
        _uc_stores().UcModelRegistryStore.transition_model_version_stage(
            self, name, version, stage, archive_existing_versions
        )

    def get_latest_versions(self, name, stages=None):
        _uc_stores().UcModelRegistryStore.get_latest_versions(self, name, stages)

    # Searches: results without tags or aliases ------------------------------------------------

    def search_model_versions(self, filter_string=None, max_results=None, order_by=None, page_token=None):
        _uc_stores()._require_arg_unspecified(arg_name="order_by", arg_value=order_by)
        found = super().search_model_versions(
            filter_string, max_results or SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT, None, page_token
        )
        return PagedList([_version_search_hit(version) for version in found], found.token)

    def search_registered_models(self, filter_string=None, max_results=None, order_by=None, page_token=None):
        # MLflow's client itself adds a prompt filter to `filter_string`, so only order_by is refused.
        _uc_stores()._require_arg_unspecified(arg_name="order_by", arg_value=order_by)
        found = super().search_registered_models(
            filter_string, max_results or SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT, None, page_token
        )
        return PagedList([_model_search_hit(model) for model in found], found.token)

    # Aliases: stored in lower case, as UC stores object names -------------------------------

    def set_registered_model_alias(self, name, alias, version):
        return super().set_registered_model_alias(name, alias.lower(), version)

    def delete_registered_model_alias(self, name, alias):
        return super().delete_registered_model_alias(name, alias.lower())

    def get_model_version_by_alias(self, name, alias):
        return super().get_model_version_by_alias(name, alias.lower())


def _version_search_hit(version: ModelVersion) -> ModelVersionSearch:
    """What UC's search returns (`model_version_search_from_uc_proto`): no tags, no aliases."""
    return ModelVersionSearch(
        name=version.name,
        version=version.version,
        creation_timestamp=version.creation_timestamp,
        last_updated_timestamp=version.last_updated_timestamp,
        description=version.description,
        user_id=version.user_id,
        source=version.source,
        run_id=version.run_id,
        status=version.status,
        status_message=version.status_message,
        model_id=version.model_id,
    )


def _model_search_hit(model: RegisteredModel) -> RegisteredModelSearch:
    """What UC's search returns (`registered_model_search_from_uc_proto`): no tags, no aliases."""
    return RegisteredModelSearch(
        name=model.name,
        creation_timestamp=model.creation_timestamp,
        last_updated_timestamp=model.last_updated_timestamp,
        description=model.description,
    )
