"""The local registry refuses what the Unity Catalog registry refuses (`platform/uc_registry.py`).

Sources: MLflow's UC registry store (mlflow/store/_unity_catalog/registry/rest_store.py), its
search entities (mlflow/entities/model_registry/model_version_search.py,
registered_model_search.py), its name check (mlflow/utils/_unity_catalog_utils.py
`split_uc_model_name`) and https://docs.databricks.com/aws/en/data-governance/unity-catalog/requirements
(object names: no space, slash or control characters; stored in lower case).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersionSearch, RegisteredModelSearch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression

from churn_example.spec import PROBLEM as CHURN
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.platform.uc_registry import UnityCatalogLocalStore
from mlops_template.monitoring.check import latest_version_time
from mlops_template.registry.versions import model_status

INPUTS = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
UC_ONLY = "unsupported for models in the Unity Catalog"


def _log(platform: LocalPlatform, *, signature: str = "full", registered_model_name: str | None = None):
    """A tiny fitted model logged with a full signature, an inputs-only one or none."""
    model = LinearRegression().fit(INPUTS, [2.0, 4.0, 6.0])
    signatures = {
        "full": infer_signature(INPUTS, model.predict(INPUTS)),
        "inputs": infer_signature(INPUTS),
        "none": None,
    }
    platform.configure_mlflow()
    with mlflow.start_run(experiment_id=platform.experiment_id("/uc-registry-tests")):
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signatures[signature],
            pip_requirements=["scikit-learn"],
            registered_model_name=registered_model_name,
        )


@pytest.fixture(scope="module")
def logged(platform: LocalPlatform):
    return _log(platform)


def test_the_platform_registry_uri_selects_the_strict_store_in_any_process(platform):
    """Registered through the `mlflow.model_registry_store` entry point (pyproject.toml), so a
    process that only sets the registry URI - the endpoint, spark_udf workers, notebooks - gets it."""
    platform.configure_mlflow()
    assert mlflow.get_registry_uri() == f"local-uc:///{platform.state_dir / 'mlflow.db'}"
    code = (
        "import sys, mlflow; mlflow.set_registry_uri(sys.argv[1]); "
        "print(type(mlflow.MlflowClient()._get_registry_client().store).__name__)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, mlflow.get_registry_uri()],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": platform.tracking_uri},
    )
    assert found.stdout.strip() == UnityCatalogLocalStore.__name__


@pytest.mark.parametrize("name", ["model", "schema.model", "a.b.c.d", "cat..model"])
def test_model_names_need_three_levels(platform, logged, name):
    """`split_uc_model_name`: UC model names are catalog.schema.model."""
    platform.configure_mlflow()
    with pytest.raises(MlflowException, match=r"must have three levels \(catalog.schema.model\)"):
        mlflow.register_model(logged.model_uri, name)


def test_model_names_without_the_characters_uc_forbids(platform):
    """UC object names have no space, slash or control character (UC requirements page)."""
    platform.configure_mlflow()
    with pytest.raises(MlflowException, match="without spaces, slashes or control characters"):
        MlflowClient().create_registered_model("test.uc_registry.my model")


@pytest.mark.parametrize(
    ("signature", "message"),
    [("none", "did not contain any signature"), ("inputs", "signature that includes only inputs")],
)
def test_a_version_needs_a_signature_with_inputs_and_outputs(platform, signature, message):
    """`UcModelRegistryStore._validate_model_signature`, both when registering a logged model's URI
    and when `log_model(registered_model_name=...)` registers it."""
    name = f"test.uc_registry.signature_{signature}"
    unsigned = _log(platform, signature=signature)
    with pytest.raises(MlflowException, match=message):
        mlflow.register_model(unsigned.model_uri, name)
    with pytest.raises(MlflowException, match=message):
        _log(platform, signature=signature, registered_model_name=name)
    assert MlflowClient().search_model_versions(f"name='{name}'") == []


def test_stages_are_refused_in_favour_of_aliases(platform, logged):
    """UC's `transition_model_version_stage` and `get_latest_versions` raise (rest_store.py), so a
    `models:/name/latest` or `/Production` URI fails as on Databricks."""
    name = "test.uc_registry.stages"
    version = mlflow.register_model(logged.model_uri, name).version
    client = MlflowClient()
    with pytest.raises(MlflowException, match=f"transition_model_version_stage' is {UC_ONLY}.*aliases"):
        client.transition_model_version_stage(name, version, "Production")
    with pytest.raises(MlflowException, match=f"get_latest_versions' is {UC_ONLY}"):
        client.get_latest_versions(name)
    for uri in (f"models:/{name}/latest", f"models:/{name}/Production"):
        with pytest.raises(MlflowException, match=UC_ONLY):
            mlflow.pyfunc.load_model(uri)
    predictions = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(INPUTS)
    assert predictions.tolist() == pytest.approx([2, 4, 6])


def test_search_results_carry_no_tags_or_aliases(platform, logged):
    """UC's searches return `ModelVersionSearch` / `RegisteredModelSearch`: reading their tags or
    aliases fails; `get_model_version` / `get_registered_model` have them."""
    name = "test.uc_registry.search"
    version = mlflow.register_model(logged.model_uri, name, tags={"gate": "passed"}).version
    client = MlflowClient()
    client.set_registered_model_alias(name, "champion", version)
    [hit] = client.search_model_versions(f"name='{name}'")
    assert isinstance(hit, ModelVersionSearch)
    assert (hit.name, hit.version, hit.run_id) == (name, version, logged.run_id)
    with pytest.raises(AttributeError):
        hit.tags.get("gate")  # what code written for the OSS registry does
    with pytest.raises(Exception, match="do not have tags.*get_model_version"):
        hit.tags()
    with pytest.raises(Exception, match="do not have aliases"):
        hit.aliases()
    full = client.get_model_version(name, version)
    assert (full.tags, full.aliases) == ({"gate": "passed"}, ["champion"])
    models = client.search_registered_models()
    assert models and all(isinstance(model, RegisteredModelSearch) for model in models)
    with pytest.raises(MlflowException, match=f"'order_by' is {UC_ONLY}"):
        client.search_model_versions(f"name='{name}'", order_by=["version_number DESC"])


def test_alias_names_are_stored_in_lower_case(platform, logged):
    """UC stores object names in lower case: `Champion` is the alias `champion`."""
    name = "test.uc_registry.aliases"
    version = mlflow.register_model(logged.model_uri, name).version
    client = MlflowClient()
    client.set_registered_model_alias(name, "Champion", version)
    assert client.get_registered_model(name).aliases == {"champion": version}
    assert client.get_model_version_by_alias(name, "CHAMPION").version == version
    client.delete_registered_model_alias(name, "CHAMPION")
    assert client.get_registered_model(name).aliases == {}
    with pytest.raises(MlflowException, match="Invalid alias name"):
        client.set_registered_model_alias(name, "champion.v2", version)


def test_the_project_reads_search_results_only_for_what_uc_returns(platform, logged):
    """`model_status` (registry/versions.py) and `latest_version_time` (monitoring/check.py) read
    only version numbers and timestamps from search results, then `get_model_version`."""
    name = "test.uc_registry.readers"
    version = mlflow.register_model(logged.model_uri, name, tags={"test_roc_auc": "0.75"}).version
    MlflowClient().set_registered_model_alias(name, "champion", version)
    [status] = model_status(name, spec=CHURN)
    assert (status.version, status.aliases, status.metrics) == (int(version), ["champion"], {"roc_auc": 0.75})
    created = MlflowClient().get_model_version(name, version).creation_timestamp
    assert latest_version_time(name) == dt.datetime.fromtimestamp(created / 1000, dt.UTC).replace(tzinfo=None)
