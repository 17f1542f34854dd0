"""Serving-time feature lookup on the local endpoint: a model logged with feature lookups answers
requests that carry keys alone, from the online snapshots the `publish_features` task writes.

Databricks behaviour relied on: Model Serving looks up every feature of a model logged with
`fe.log_model` from the published online store, and feature values sent in the request override
the lookup ("Automatic feature lookup with MLflow models on Databricks", docs.databricks.com/aws/en/
machine-learning/feature-store/automatic-feature-lookup); such a model's signature takes the source
columns as required inputs and the features as optional ones (databricks/ml_features/utils/
signature_utils.py, `get_input_schema_from_feature_spec`); its raw model is called without an input
schema (`drop_signature_inputs_and_invalid_params` in databricks/ml_features/
_training_scoring_client/_training_scoring_client.py); the feature lookup DataFrame is logged to
the inference table only with the served entity's `ENABLE_FEATURE_TRACING=true` ("Log feature
lookup DataFrames to inference tables"); `environment_vars` is a field of `ServedEntityInput` /
`ServedEntityOutput` (databricks/sdk/service/serving.py).
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
from databricks.ml_features_common.entities.feature_spec import FeatureSpec
from databricks.ml_features_common.mlflow_model_constants import MLFLOW_MODEL_NAME, RAW_MODEL_FOLDER
from databricks.sdk.errors import InvalidParameterValue, OperationFailed
from databricks.sdk.service.serving import (
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    ServedEntityInput,
    ServedModelStateDeployment,
)
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from mlops_laptop.platform.online_store import snapshot_path, write_snapshot
from mlops_laptop.platform.warehouse import local_table_dir
from mlops_laptop.serving.endpoint import BatchSettings, ServedModel, UnservableModelError
from mlops_laptop.serving.feature_lookup import FeatureLookups, FeatureLookupSetupError
from mlops_template.platform.feature_store import FEATURE_LOOKUPS_METADATA, LookupSpec
from mlops_template.serving import ab_model
from mlops_template.serving.ab_model import challenger_rows
from mlops_template.serving.ab_registry import FEATURE_SPEC_FILE, register_ab_model
from mlops_template.serving.served_entities import served_entity_id
from mlops_template.serving.spec import EndpointConfig, ServedEntitySpec, build_endpoint_config
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.deploy import DeployConfig
from test_serving_support import invoke, local_workspace, logged_endpoint, serving

MODEL = "test.serving_lookup.fare"
ZONE_TABLE = "test.serving_lookup.zone_features"
DEST_TABLE = "test.serving_lookup.dest_features"
TRACING = {"ENABLE_FEATURE_TRACING": "true"}
WAIT = timedelta(seconds=60)

ZONE_LOOKUP = LookupSpec(
    table_name=ZONE_TABLE,
    lookup_key=("zone",),
    timestamp_lookup_key="pickup_time",
    features=(("mean_value", "zone_mean_value"), ("trips", "zone_trips")),
    default_values={"zone_trips": 0},
    lookback_seconds=3600.0,
)
DEST_LOOKUP = LookupSpec(  # no lookup time: the latest row is used whatever its time
    table_name=DEST_TABLE,
    lookup_key=("dest",),
    timestamp_lookup_key=None,
    features=(("busy", "dest_busy"),),
    default_values={},
    lookback_seconds=None,
)
FEATURES = ["distance", "zone_mean_value", "zone_trips", "dest_busy"]
SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec(DataType.double, "distance"),
            ColSpec(DataType.long, "zone"),
            ColSpec(DataType.long, "dest"),
            ColSpec(DataType.datetime, "pickup_time"),
            ColSpec(DataType.double, "zone_mean_value", required=False),
            ColSpec(DataType.integer, "zone_trips", required=False),
            ColSpec(DataType.integer, "dest_busy", required=False),
        ]
    ),
    outputs=Schema([ColSpec(DataType.double)]),
)
T0 = dt.datetime(2024, 3, 1, 10, 0)  # the request time of most requests here


def register_lookup_model(platform, name: str = MODEL, *, slope: float = 2.0) -> str:
    """A regression over `distance` and three looked-up features (missing ones imputed), logged as
    the local feature store logs a model with lookups: request inputs required, features optional,
    the lookups in the MLmodel metadata, a keys-only input example. Returns the version."""
    rng = np.random.default_rng(int(slope * 10))
    train = pd.DataFrame(
        {
            "distance": rng.gamma(2.0, 1.5, 300),
            "zone_mean_value": rng.uniform(5, 30, 300),
            "zone_trips": rng.integers(0, 50, 300),
            "dest_busy": rng.integers(0, 2, 300),
        }
    )
    target = (
        1.0
        + slope * train.distance
        + 0.5 * train.zone_mean_value
        + 0.1 * train.zone_trips
        + 3 * train.dest_busy
    )
    model = make_pipeline(make_column_transformer((SimpleImputer(), FEATURES)), LinearRegression())
    model.fit(train, target)
    example = pd.DataFrame({"distance": [1.5, 3.0], "zone": [1, 4], "dest": [7, 9], "pickup_time": [T0, T0]})
    with (
        mlflow.start_run(experiment_id=platform.experiment_id("/serving-tests/lookup")),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=".*input example")  # it lacks the features
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=SIGNATURE,
            input_example=example,
            metadata={FEATURE_LOOKUPS_METADATA: [ZONE_LOOKUP.to_dict(), DEST_LOOKUP.to_dict()]},
            pip_requirements=["scikit-learn"],
            skops_trusted_types=["numpy.dtype"],
            registered_model_name=name,
        )
    return str(info.registered_model_version)


def publish(state_dir: Path, *, zone_mean_1: float = 12.0, dest_busy_7: int = 1) -> None:
    """Snapshots of both tables: zone 1 fresh (09:30), zone 2 stale (08:00, beyond the hour's
    lookback), zone 3 newer than the requests (10:30), zone 4 none; dest 7 and 8 only."""
    zones = pd.DataFrame(
        {
            "zone": [1, 2, 3],
            "ts": pd.to_datetime(["2024-03-01 09:30", "2024-03-01 08:00", "2024-03-01 10:30"]),
            "mean_value": [zone_mean_1, 20.0, 25.0],
            "trips": np.array([30, 40, 50], dtype="int32"),
        }
    )
    write_snapshot(state_dir, ZONE_TABLE, zones, ["zone"], "ts")
    dests = pd.DataFrame(
        {
            "dest": [7, 8],
            "ts": pd.to_datetime(["2024-03-01 11:00", "2024-03-01 09:00"]),
            "busy": np.array([dest_busy_7, 0], dtype="int32"),
        }
    )
    write_snapshot(state_dir, DEST_TABLE, dests, ["dest"], "ts")


def request(zone: int, dest: int = 7, *, at: dt.datetime = T0, distance: float = 2.0, **sent) -> dict:
    return {"distance": distance, "zone": zone, "dest": dest, "pickup_time": at.isoformat(), **sent}


def expected(version: str, rows: list[dict]) -> list[float]:
    """What the raw model answers for rows holding every feature (None: missing, imputed)."""
    model = mlflow.sklearn.load_model(f"models:/{MODEL}/{version}")
    frame = pd.DataFrame(rows, columns=FEATURES).astype("float64")
    return list(model.predict(frame))


def records(state_dir: Path, config: EndpointConfig) -> pd.DataFrame:
    """The inference table's records, by request id."""
    directory = local_table_dir(state_dir, config.inference_table.payload_table)
    return pq.read_table(directory).to_pandas().set_index("databricks_request_id")


def feature_lookup(record: pd.Series) -> dict:
    return json.loads(record.response)["databricks_output"]["feature_lookup"]


@pytest.fixture(scope="module")
def version(platform) -> str:
    platform.configure_mlflow()
    return register_lookup_model(platform)


@pytest.fixture(scope="module")
def traced(version) -> EndpointConfig:
    """The endpoint of the model with feature tracing on, as the deploy task configures it."""
    return logged_endpoint("fares", MODEL, version, environment_vars=TRACING)


@pytest.fixture
def state_dir(tmp_path) -> Path:
    publish(tmp_path)
    return tmp_path


def test_a_keys_only_request_is_answered_with_the_looked_up_features(traced, version, state_dir):
    with serving([traced], state_dir) as (url, _):
        response = invoke(url, "fares", {"dataframe_records": [request(1, 7)]})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"predictions"}  # the client gets no lookup data
    assert response.json()["predictions"] == pytest.approx(expected(version, [[2.0, 12.0, 30, 1]]))
    record = records(state_dir, traced).loc[response.headers["x-request-id"]]
    assert feature_lookup(record) == {
        "columns": ["zone_mean_value", "zone_trips", "dest_busy"],
        "data": [[12.0, 30, 1]],
        "defaulted": [[]],
    }
    assert json.loads(record.response)["predictions"] == response.json()["predictions"]


def test_a_key_without_a_usable_row_gets_the_default_or_null_and_is_recorded_so(traced, version, state_dir):
    """Zone 2's row is older than the lookback, zone 3's newer than the request, zone 4 has none,
    dest 9 has none: `zone_trips` gets its default 0, the others null (an integer feature reaches
    the model as NaN, as the feature store wrapper hands it to its raw model)."""
    rows = [request(2, 8), request(3, 9), request(4, 7), request(1, 7, at=T0 - timedelta(minutes=31))]
    with serving([traced], state_dir) as (url, _):
        response = invoke(url, "fares", {"dataframe_records": rows})
    assert response.status_code == 200, response.text
    features = [[2.0, None, 0, 0], [2.0, None, 0, None], [2.0, None, 0, 1], [2.0, None, 0, 1]]
    assert response.json()["predictions"] == pytest.approx(expected(version, features))
    record = records(state_dir, traced).loc[response.headers["x-request-id"]]
    assert feature_lookup(record) == {
        "columns": ["zone_mean_value", "zone_trips", "dest_busy"],
        "data": [[None, 0, 0], [None, 0, None], [None, 0, 1], [None, 0, 1]],
        "defaulted": [
            ["zone_mean_value", "zone_trips"],
            ["zone_mean_value", "zone_trips", "dest_busy"],
            ["zone_mean_value", "zone_trips"],
            ["zone_mean_value", "zone_trips"],  # its 09:30 row is after the 09:29 request
        ],
    }


def test_feature_values_sent_by_the_client_override_the_lookup(traced, version, state_dir):
    """A sent non-null value wins, a sent null is looked up, and a value sent for a key without a
    row is no default. (A null in an integer column is refused before any lookup, by MLflow's
    `cast_df_types_according_to_schema`, which its scoring server applies too:
    mlflow/pyfunc/scoring_server/__init__.py, `infer_and_parse_data`.)"""
    mixed = [request(1, 7, zone_mean_value=99.0), request(1, 7, zone_mean_value=None)]
    unknown_key = [request(4, 9, zone_trips=5, dest_busy=1)]
    with serving([traced], state_dir) as (url, _):
        responses = [invoke(url, "fares", {"dataframe_records": rows}) for rows in (mixed, unknown_key)]
        null_integer = invoke(url, "fares", {"dataframe_records": [*unknown_key, request(1, 7)]})
    assert [response.status_code for response in responses] == [200, 200], responses[0].text
    features = [[2.0, 99.0, 30, 1], [2.0, 12.0, 30, 1], [2.0, None, 5, 1]]
    predictions = [p for response in responses for p in response.json()["predictions"]]
    assert predictions == pytest.approx(expected(version, features))
    logged = records(state_dir, traced)
    lookups = [feature_lookup(logged.loc[response.headers["x-request-id"]]) for response in responses]
    assert [lookup["data"] for lookup in lookups] == [[[99.0, 30, 1], [12.0, 30, 1]], [[None, 5, 1]]]
    assert [lookup["defaulted"] for lookup in lookups] == [[[], []], [["zone_mean_value"]]]
    assert null_integer.status_code == 400 and "zone_trips" in null_integer.json()["message"]


def test_a_new_publish_is_served_by_the_running_server_without_a_restart(traced, version, state_dir):
    body = {"dataframe_records": [request(1, 7)]}
    with serving([traced], state_dir) as (url, _):
        before = invoke(url, "fares", body).json()["predictions"]
        publish(state_dir, zone_mean_1=28.0, dest_busy_7=0)
        after = invoke(url, "fares", body).json()["predictions"]
    assert before == pytest.approx(expected(version, [[2.0, 12.0, 30, 1]]))
    assert after == pytest.approx(expected(version, [[2.0, 28.0, 30, 0]]))


def test_a_publish_that_drops_a_feature_column_is_a_server_fault_until_it_is_republished(
    traced, version, state_dir
):
    body = {"dataframe_records": [request(1, 7)]}
    zones = pd.DataFrame({"zone": [1], "ts": pd.to_datetime(["2024-03-01 09:30"]), "mean_value": [12.0]})
    with serving([traced], state_dir) as (url, _):
        write_snapshot(state_dir, ZONE_TABLE, zones, ["zone"], "ts")
        failed = invoke(url, "fares", body)
        publish(state_dir)
        answered = invoke(url, "fares", body)
    assert failed.status_code == 500, failed.text
    assert "lacks the feature columns ['trips']" in failed.json()["message"]
    assert answered.json()["predictions"] == pytest.approx(expected(version, [[2.0, 12.0, 30, 1]]))


def test_concurrent_requests_batched_together_each_log_their_own_lookup(traced, version, state_dir):
    """Requests answered in one model call are logged each with its own rows' lookups."""
    bodies = [{"dataframe_records": [request(zone, 7)] * zone} for zone in (1, 2, 3, 4) * 3]
    with (
        serving([traced], state_dir, batching=BatchSettings(max_wait_ms=100)) as (url, [endpoint]),
        ThreadPoolExecutor(len(bodies)) as pool,
    ):
        responses = list(pool.map(lambda body: invoke(url, "fares", body), bodies))
        stats = endpoint.models[f"fare-{version}"].batcher.stats
    assert stats.model_calls < len(bodies)
    logged = records(state_dir, traced)
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        lookup = feature_lookup(logged.loc[response.headers["x-request-id"]])
        zone = body["dataframe_records"][0]["zone"]
        assert lookup["data"] == [[12.0 if zone == 1 else None, 30 if zone == 1 else 0, 1]] * zone


def test_without_feature_tracing_the_record_has_the_answer_alone(version, state_dir):
    config = logged_endpoint("fares-untraced", MODEL, version)
    with serving([config], state_dir) as (url, _):
        response = invoke(url, "fares-untraced", {"dataframe_records": [request(1, 7)]})
    assert response.status_code == 200, response.text
    record = records(state_dir, config).loc[response.headers["x-request-id"]]
    assert json.loads(record.response) == response.json()


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("zone", "north", "zone"),
        ("zone", [1, 2], "zone"),
        ("zone", {"id": 1}, "zone"),
        ("pickup_time", "soon", "pickup_time"),
        ("pickup_time", "2024-03-01T10:00:00Z", "timezone-naive"),  # MLflow's datetime inputs
    ],
)
def test_a_key_or_lookup_time_of_the_wrong_type_is_a_400_and_the_server_keeps_answering(
    traced, state_dir, column, value, message
):
    with serving([traced], state_dir) as (url, _):
        refused = invoke(url, "fares", {"dataframe_records": [request(1, 7) | {column: value}]})
        answered = invoke(url, "fares", {"dataframe_records": [request(1, 7)]})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error_code"] == "BAD_REQUEST" and message in refused.json()["message"]
    assert answered.status_code == 200


def test_a_signature_that_does_not_fit_its_lookups_is_refused_at_load(state_dir):
    without_output = Schema([spec for spec in SIGNATURE.inputs.inputs if spec.name != "dest_busy"])
    with pytest.raises(FeatureLookupSetupError, match=r"uses columns \['dest_busy'\]"):
        FeatureLookups.open([ZONE_LOOKUP, DEST_LOOKUP], state_dir, without_output)
    text_time = Schema(
        [ColSpec(DataType.string, s.name) if s.name == "pickup_time" else s for s in SIGNATURE.inputs.inputs]
    )
    with pytest.raises(FeatureLookupSetupError, match="'pickup_time' .* not datetime"):
        FeatureLookups.open([ZONE_LOOKUP, DEST_LOOKUP], state_dir, text_time)


def test_a_model_whose_tables_are_not_published_cannot_be_served(traced, tmp_path):
    [entity] = traced.served_entities
    with pytest.raises(UnservableModelError, match=f"{ZONE_TABLE}.*publish it: run task publish_features"):
        ServedModel.load("fares", entity, BatchSettings(), tmp_path)


def _entity(version: str, **environment_vars: str) -> ServedEntityInput:
    return ServedEntityInput(
        name=f"fare-{version}",
        entity_name=MODEL,
        entity_version=version,
        workload_size="Small",
        environment_vars=environment_vars or None,
    )


def test_the_control_plane_serves_a_lookup_model_and_fails_the_update_without_its_snapshot(version, tmp_path):
    """The keys-only input example passes the served entity's check once the tables are published;
    without a snapshot the config update ends UPDATE_FAILED saying what to publish, and a persisted
    config whose snapshot went missing answers 503 with the reason (a server fault, not the client's)."""
    state_dir = tmp_path / "state"
    with local_workspace(state_dir) as workspace:
        endpoints = workspace.client.serving_endpoints
        endpoints.create(
            name="lookups", config=EndpointCoreConfigInput(name="lookups", served_entities=[_entity(version)])
        )
        with pytest.raises(OperationFailed, match="UPDATE_FAILED"):
            endpoints.wait_get_serving_endpoint_not_updating("lookups", timeout=WAIT)
        [failed] = endpoints.get("lookups").pending_config.served_entities
        assert failed.state.deployment == ServedModelStateDeployment.DEPLOYMENT_FAILED
        assert "publish it: run task publish_features" in failed.state.deployment_state_message
        publish(state_dir)
        endpoints.update_config("lookups", served_entities=[_entity(version, **TRACING)])
        ready = endpoints.wait_get_serving_endpoint_not_updating("lookups", timeout=WAIT)
        assert [e.environment_vars for e in ready.config.served_entities] == [TRACING]
        answered = invoke(workspace.url, "lookups", {"dataframe_records": [request(1, 7)]})
        assert answered.status_code == 200, answered.text
        health = requests.get(f"{workspace.url}/health", timeout=10).json()
        deployed = ServedEntitySpec(  # as the deploy task names it: the ids it records match
            name=f"fare-{version}",
            entity_name=MODEL,
            entity_version=version,
            scale_to_zero=False,
            environment_vars=TRACING,
        )
        served = health["endpoints"]["lookups"]["served_entities"][f"fare-{version}"]
        assert served["served_entity_id"] == served_entity_id("lookups", deployed)
    snapshot_path(state_dir, ZONE_TABLE).unlink()
    with local_workspace(state_dir, preload=False) as workspace:
        refused = invoke(workspace.url, "lookups", {"dataframe_records": [request(1, 7)]})
        assert workspace.client.serving_endpoints.get("lookups").config.served_entities[
            0
        ].environment_vars == (TRACING)
    assert refused.status_code == 503, refused.text
    assert "publish it: run task publish_features" in refused.json()["message"]


def test_environment_variables_other_than_feature_tracing_are_still_refused(version, tmp_path):
    """The laptop honours `ENABLE_FEATURE_TRACING` ("true" / "false") and refuses what it cannot."""
    publish(tmp_path / "state")
    with local_workspace(tmp_path / "state") as workspace:
        endpoints = workspace.client.serving_endpoints
        endpoints.create(
            name="lookups-env",
            config=EndpointCoreConfigInput(name="lookups-env", served_entities=[_entity(version)]),
        )
        endpoints.wait_get_serving_endpoint_not_updating("lookups-env", timeout=WAIT)
        refused = [
            ({"ENABLE_FEATURE_TRACING": "true", "OPENAI_API_KEY": "x"}, r"does not emulate environment_vars"),
            ({"ENABLE_FEATURE_TRACING": "yes"}, "must be 'true' or 'false'"),
        ]
        for variables, message in refused:
            with pytest.raises(InvalidParameterValue, match=message):
                endpoints.update_config("lookups-env", served_entities=[_entity(version, **variables)])
        assert endpoints.get("lookups-env").state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
        endpoints.update_config(
            "lookups-env", served_entities=[_entity(version, ENABLE_FEATURE_TRACING="false")]
        )
        done = endpoints.wait_get_serving_endpoint_not_updating("lookups-env", timeout=WAIT)
    assert done.config.config_version == 2


def test_the_deploy_task_asks_for_feature_tracing_in_the_sdk_request_unless_features_are_sent(traced):
    """`build_endpoint_config` sends `environment_vars` in the `ServedEntityInput` of each served
    entity; it parses back with the SDK's own dataclass."""
    request_body = build_endpoint_config(traced).config.as_dict()
    assert request_body["served_entities"][0]["environment_vars"] == TRACING
    parsed = EndpointCoreConfigInput.from_dict(request_body)
    assert [e.environment_vars for e in parsed.served_entities] == [TRACING]
    plain = build_endpoint_config(logged_endpoint("fares", MODEL, "1")).config.as_dict()
    assert "environment_vars" not in plain["served_entities"][0]
    arguments = [
        "--model-name=test.serving_lookup.fare",
        "--endpoint-name=fares",
        "--schema=test.serving_lookup",
    ]
    assert build_config(DeployConfig, arguments).serving_features == "lookup"
    assert (
        build_config(DeployConfig, [*arguments, "--serving-features=request"]).serving_features == "request"
    )
    with pytest.raises(TaskArgumentError, match="--serving-features: Input should be 'lookup' or 'request'"):
        build_config(DeployConfig, [*arguments, "--serving-features=online"])


def test_the_sticky_ab_model_of_lookup_models_answers_keys_only_requests(platform, version, state_dir):
    """The A/B model is registered with the champion's lookups and signature, keyed by a request
    input (`zone`), so the endpoint looks the features up before it assigns each key its variant; a
    null integer feature reaches both variants. It takes no column beyond the champion's, as on
    Databricks, where the feature store wrapper hands its raw model only the feature spec's columns
    (databricks/ml_features/_training_scoring_client/_training_scoring_client.py, `udf_input_columns`):
    a key that is no request input is refused by the deploy task (tests/test_rollout_policy.py)."""
    assert ab_model.LOOKUPS_METADATA == FEATURE_LOOKUPS_METADATA  # the A/B model cannot import it
    challenger = register_lookup_model(platform, slope=3.0)
    sticky = register_ab_model(
        MODEL,
        champion_version=version,
        challenger_version=challenger,
        key_column="zone",
        challenger_share=0.5,
        experiment_id=platform.experiment_id("/serving-tests/lookup"),
    )
    ab_signature = mlflow.models.get_model_info(f"models:/{MODEL}_ab/{sticky.model_version}").signature
    assert ab_signature.inputs == SIGNATURE.inputs
    config = logged_endpoint("fares-ab", MODEL, version, sticky_ab=sticky, environment_vars=TRACING)
    rows = [request(zone, 7) for zone in (1, 2, 3, 4, 5, 1)] + [request(4, 9)]
    with serving([config], state_dir) as (url, _):
        response = invoke(url, "fares-ab", {"dataframe_records": rows})
    assert response.status_code == 200, response.text
    answered = pd.DataFrame(response.json()["predictions"])
    to_challenger = challenger_rows(pd.Series([row["zone"] for row in rows]), 0.5)
    assert 0 < to_challenger.sum() < len(rows)
    features = [[2.0, 12.0, 30, 1]] + [[2.0, None, 0, 1]] * 4 + [[2.0, 12.0, 30, 1], [2.0, None, 0, None]]
    champion, challenger_answer = expected(version, features), expected(challenger, features)
    assert list(answered.variant) == list(np.where(to_challenger, "challenger", "champion"))
    assert answered.prediction.to_numpy() == pytest.approx(
        np.where(to_challenger, challenger_answer, champion)
    )
    lookup = feature_lookup(records(state_dir, config).loc[response.headers["x-request-id"]])
    assert lookup["defaulted"][-1] == ["zone_mean_value", "zone_trips", "dest_busy"]


def test_an_ab_variant_logged_with_fe_log_model_is_called_through_its_raw_model(tmp_path):
    """`fe.log_model` saves the model it wraps as `raw_model` (no input schema) and the feature spec
    in the `feature_store` data dir of a pyfunc whose loader is `databricks.feature_store.mlflow_model`
    (databricks/ml_features/_training_scoring_client/_training_scoring_client.py, `log_model`), a
    model `mlflow.pyfunc.load_model` cannot load outside Databricks serving. The A/B model calls the
    raw model with the columns of the wrapper's signature, a null integer feature as NaN."""
    assert ab_model.FEATURE_STORE_DATA[-1] == "feature_store"
    assert (RAW_MODEL_FOLDER, FEATURE_SPEC_FILE) == ("raw_model", FeatureSpec.FEATURE_ARTIFACT_FILE)
    rng = np.random.default_rng(3)
    train = pd.DataFrame({column: rng.uniform(0, 10, 50) for column in FEATURES})
    raw = make_pipeline(make_column_transformer((SimpleImputer(), FEATURES)), LinearRegression())
    raw.fit(train, train.distance * 2)
    data = tmp_path / "feature_store"
    mlflow.sklearn.save_model(raw, data / RAW_MODEL_FOLDER, serialization_format="cloudpickle")
    wrapper = tmp_path / "variant"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example")
        mlflow.pyfunc.save_model(
            wrapper, loader_module=MLFLOW_MODEL_NAME, data_path=data, signature=SIGNATURE
        )
    predict, columns = ab_model.load_variant(wrapper)
    assert columns == SIGNATURE.inputs.input_names()
    rows = pd.DataFrame([request(1, 7) | {"zone_mean_value": 3.0, "zone_trips": 4, "dest_busy": np.nan}])
    assert list(predict(rows[columns])) == pytest.approx(list(raw.predict(rows[FEATURES])))
