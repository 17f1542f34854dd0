"""Rollout policy: what the deploy task serves for each policy and registry state, and the sticky A/B
assignment it configures.

The registry state is set as the validation gate and the rollout job leave it: aliases `champion` /
`challenger` on small regression models (tests/test_serving_support.py), or on models of the
regression flavour of churn logged with feature lookups as the train task logs them, and the gate's
`gate_outcome` tag (the gate itself is tested in tests/test_registry.py and tests/test_training.py).
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import regression_spec
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.serving.local_deploy import deployed_endpoint
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.registry.experiment import (
    EXPERIMENT,
    ROLLOUT_OUTCOME_TAG,
    conclude_rollback,
    running_experiment,
)
from mlops_template.registry.versions import (
    GATE_OUTCOME_TAG,
    PROMOTED,
    REJECTED,
    promote,
    register_challenger,
    set_version_tags,
)
from mlops_template.serving.ab_model import CHALLENGER, CHAMPION, challenger_rows
from mlops_template.serving.deploy import endpoint_deployer
from mlops_template.serving.spec import EndpointConfig, ab_model_name
from mlops_template.tasks import deploy, publish_features
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.deploy import DeployConfig, endpoint_spec
from mlops_template.training.config import TrainingConfig
from mlops_template.training.dataset import build_training_set, feature_training_set
from mlops_template.training.model import train_model
from mlops_template.training.tracking import FeatureServing, RunContext, log_training_run
from test_serving_support import model_inputs, register_regression_model

SCHEMA = "test.rollout_policy"
KEY = "customer_id"
POLICIES = ("replace", "canary", "ab_test")


@pytest.fixture
def model(platform: LocalPlatform) -> str:
    platform.configure_mlflow()
    return f"{SCHEMA}.m_{uuid.uuid4().hex[:8]}"


def _register(platform: LocalPlatform, model: str, slope: float, alias: str, outcome: str) -> int:
    """A version with `alias` and the gate outcome the validation gate would have recorded."""
    version = int(register_regression_model(platform, model, slope=slope, aliases=(alias,)))
    set_version_tags(model, version, {GATE_OUTCOME_TAG: outcome})
    return version


def _experiment(platform: LocalPlatform, model: str) -> None:
    """Champion version 1 and the challenger version 2 the gate made an experiment."""
    _register(platform, model, 2.0, "champion", PROMOTED)
    _register(platform, model, 3.0, "challenger", EXPERIMENT)


def _arguments(
    model: str, rollout: str, *extra: str, endpoint: str = "rollout-policy", key: str = KEY
) -> list[str]:
    key_argument = [f"--ab-key-column={key}"] if rollout == "ab_test" else []
    return [
        f"--model-name={model}",
        f"--endpoint-name={endpoint}",
        f"--schema={SCHEMA}",
        "--experiment-name=/rollout-tests/ab",
        f"--rollout={rollout}",
        *key_argument,
        *extra,
    ]


def _spec(platform: LocalPlatform, model: str, rollout: str, *extra: str) -> EndpointConfig:
    return endpoint_spec(platform, build_config(DeployConfig, _arguments(model, rollout, *extra)))


def _served(spec: EndpointConfig) -> list[tuple[str, str, int]]:
    """(entity name, version, traffic percent) of each served entity."""
    return [
        (entity.entity_name, entity.entity_version, route.traffic_percentage)
        for entity, route in zip(spec.served_entities, spec.routes, strict=True)
    ]


def _ab_registered(model: str) -> bool:
    try:
        MlflowClient().get_registered_model(ab_model_name(model))
    except MlflowException:
        return False
    return True


# --- what each policy serves -------------------------------------------------------------------


def test_without_an_experiment_every_policy_serves_the_champion_alone(platform, model):
    """The gate promoted the challenger: `challenger` and `champion` are the same version."""
    version = _register(platform, model, 2.0, "champion", PROMOTED)
    MlflowClient().set_registered_model_alias(model, "challenger", str(version))
    for rollout in POLICIES:
        spec = _spec(platform, model, rollout)
        assert (_served(spec), spec.sticky_ab) == ([(model, "1", 100)], None), rollout
        assert "challenger_version" not in spec.tags


@pytest.mark.parametrize(("percent", "routes"), [(10, (90, 10)), (25, (75, 25))])
def test_canary_routes_the_challenger_its_percent_of_requests(platform, model, percent, routes):
    """Databricks splits an endpoint's requests between served entities by `traffic_config.routes`,
    integer percentages that sum to 100 ("Serve multiple models to a model serving endpoint",
    docs.databricks.com; databricks-sdk serving.py `Route.traffic_percentage`: 0..100)."""
    _experiment(platform, model)

    spec = _spec(platform, model, "canary", f"--challenger-percent={percent}")

    assert _served(spec) == [(model, "1", routes[0]), (model, "2", routes[1])]
    assert spec.sticky_ab is None
    assert (spec.tags["model_version"], spec.tags["challenger_version"]) == ("1", "2")


def test_ab_test_serves_the_sticky_ab_model_alone_with_the_configured_share(platform, model):
    """Databricks routes per request, so stickiness is the A/B model's: each key's variant is a
    hash of its value (serving/ab_model.py). The registered model, loaded as serving loads it,
    keeps each of 10,000 keys on one variant and gives the challenger 25% of them, ±3 points.
    Would catch a share passed as a percent, an unstable hash, or a key type the model refuses."""
    _experiment(platform, model)

    spec = _spec(platform, model, "ab_test", "--challenger-percent=25")

    assert _served(spec) == [(ab_model_name(model), "1", 100)]
    sticky = spec.sticky_ab
    assert sticky is not None
    assert (sticky.key_column, sticky.challenger_share) == (KEY, 0.25)
    assert (sticky.champion_version, sticky.challenger_version, sticky.model_version) == ("1", "2", "1")
    ab = mlflow.pyfunc.load_model(f"models:/{ab_model_name(model)}/1")
    frame = model_inputs(10_000, seed=5).assign(**{KEY: [f"customer-{n}" for n in range(10_000)]})
    variants = ab.predict(frame)["variant"].to_numpy()
    assert set(variants) == {CHAMPION, CHALLENGER}
    assert (variants == CHALLENGER).mean() == pytest.approx(0.25, abs=0.03)
    reordered = frame.sample(frac=1.0, random_state=3)
    again = ab.predict(reordered)["variant"].to_numpy()
    assert (again == variants[reordered.index.to_numpy()]).all()
    # A numeric key (a long row id, as the pipeline's row ids are) is taken and hashed as its text.
    numbered = frame.assign(**{KEY: np.arange(10_000, dtype="int64")})
    by_number = ab.predict(numbered)["variant"].to_numpy()
    assert ((by_number == CHALLENGER) == challenger_rows(numbered[KEY].astype(str), 0.25)).all()


def test_replace_never_serves_a_challenger(platform, model, caplog):
    _experiment(platform, model)
    with caplog.at_level(logging.WARNING, logger="mlops_template.tasks.deploy"):
        spec = _spec(platform, model, "replace", "--challenger-percent=50")
    assert _served(spec) == [(model, "1", 100)]
    assert "version 2 is a running experiment, but rollout replace serves no challenger" in caplog.text
    assert not _ab_registered(model)


@pytest.mark.parametrize("rollout", ["canary", "ab_test"])
def test_a_rejected_challenger_is_never_served(platform, model, rollout):
    _register(platform, model, 2.0, "champion", PROMOTED)
    _register(platform, model, 3.0, "challenger", REJECTED)
    assert _served(_spec(platform, model, rollout)) == [(model, "1", 100)]
    assert not _ab_registered(model)


@pytest.mark.parametrize("rollout", ["canary", "ab_test"])
def test_a_rolled_back_challenger_is_never_served(platform, model, rollout):
    _experiment(platform, model)
    experiment = running_experiment(model)
    assert experiment is not None
    conclude_rollback(experiment, "worse live")
    assert MlflowClient().get_model_version(model, "2").tags[ROLLOUT_OUTCOME_TAG] == "rolled_back"
    assert _served(_spec(platform, model, rollout)) == [(model, "1", 100)]


def test_ab_test_without_a_key_column_is_refused_before_anything_changes(platform, model, monkeypatch):
    """The entry point parses its parameters first: nothing is registered, deployed or marked."""
    _experiment(platform, model)
    arguments = [a for a in _arguments(model, "ab_test") if not a.startswith("--ab-key-column")]
    monkeypatch.setattr(sys, "argv", ["mlops-deploy", *arguments])
    with pytest.raises(
        TaskArgumentError, match=r"--rollout=ab_test needs --ab-key-column.*--var ab_key_column"
    ):
        deploy.main()
    assert not _ab_registered(model)
    assert running_experiment(model).started_at is None
    with pytest.raises(
        TaskArgumentError, match="--challenger-percent: Input should be less than or equal to 99"
    ):
        build_config(DeployConfig, _arguments(model, "canary", "--challenger-percent=100"))
    with pytest.raises(
        TaskArgumentError, match="--rollout: Input should be 'replace', 'canary' or 'ab_test'"
    ):
        build_config(DeployConfig, _arguments(model, "blue_green"))


@pytest.fixture
def lookup_experiment(platform: LocalPlatform, churn_schema: str) -> Iterator[str]:
    """Champion version 1 and experiment version 2 of the regression flavour of churn, each logged
    with its feature lookups as the train task logs them (serving_features=lookup: request inputs
    `customer_id`, `event_ts`, `plan`, `minutes`, `support_tickets`; the row id `event_id` is none),
    the feature table published to the local online store; the problem loaded is that spec."""
    spec = regression_spec.PROBLEM
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROBLEM_VARIABLE, regression_spec.REFERENCE)
        platform.configure_mlflow()
        model = f"{SCHEMA}.lookups_{uuid.uuid4().hex[:8]}"
        events = platform.read_table(spec.prepared_table_name(churn_schema))
        frame = build_training_set(platform, spec, events, churn_schema).cache()
        served_set = feature_training_set(platform, spec, events, churn_schema, with_row_id=False)
        lookups = FeatureServing(platform.feature_store, served_set)
        context = RunContext(
            spec.prepared_table_name(churn_schema), spec.feature_table_names(churn_schema), "test", "1"
        )
        for alpha in (1.0, 10.0):
            trained = train_model(frame, TrainingConfig.from_overrides({"alpha": alpha}, spec), spec)
            experiment_id = platform.experiment_id("/rollout-tests/lookups")
            register_challenger(model, log_training_run(experiment_id, trained, context, lookups))
        frame.unpersist()
        promote(model, 1)
        set_version_tags(model, 2, {GATE_OUTCOME_TAG: EXPERIMENT})
        publish_features.run(
            platform,
            build_config(
                publish_features.PublishFeaturesConfig, [f"--schema={churn_schema}", "--online-store=tests"]
            ),
        )
        yield model


def _endpoint_serves(platform: LocalPlatform, endpoint: str) -> list[tuple[str, str]]:
    """(entity name, version) of each entity the local control plane serves on `endpoint`."""
    served = deployed_endpoint(platform, endpoint)
    assert served is not None and served.config is not None
    return [(entity.entity_name, entity.entity_version) for entity in served.config.served_entities]


def test_ab_test_of_a_lookup_champion_keyed_by_no_request_input_is_refused_before_anything_changes(
    platform, lookup_experiment
):
    """A champion logged with feature lookups (`fe.log_model`) gets an A/B model logged with its
    feature spec, and the feature store wrapper gives the model it wraps only the spec's columns,
    `udf_input_columns = [ci.output_name for ci in feature_spec.column_infos if ci.include]`
    (databricks/ml_features/_training_scoring_client/_training_scoring_client.py): the source columns
    (the request inputs, databricks/ml_features/utils/signature_utils.py
    `get_input_schema_from_feature_spec`) and the features. Keyed by the row id, the A/B model would
    fail every request on Databricks, so the deploy task refuses it on both platforms, naming the
    request inputs to key by instead: nothing is registered, the endpoint keeps serving the champion
    and the experiment has not started. Keyed by `customer_id`, a request input, the A/B model is
    served; its signature is the champion's (no extra key column, as on Databricks), and the local
    control plane switched to it only once it answered its keys-only input example."""
    model = lookup_experiment
    endpoint = f"rollout-{model.rsplit('_', 1)[-1]}"
    deploy.run(platform, build_config(DeployConfig, _arguments(model, "replace", endpoint=endpoint)))
    assert _endpoint_serves(platform, endpoint) == [(model, "1")]
    row_id = regression_spec.PROBLEM.row_id

    with pytest.raises(TaskArgumentError) as refused:
        deploy.run(
            platform, build_config(DeployConfig, _arguments(model, "ab_test", endpoint=endpoint, key=row_id))
        )

    message = str(refused.value)
    assert f"--ab-key-column={row_id} is not a request input, and the champion looks its" in message
    assert str(regression_spec.PROBLEM.request_input_names) in message
    assert "udf_input_columns" in message and "serving_features=request" in message
    assert not _ab_registered(model)
    assert _endpoint_serves(platform, endpoint) == [(model, "1")]
    assert running_experiment(model).started_at is None

    deploy.run(platform, build_config(DeployConfig, _arguments(model, "ab_test", endpoint=endpoint)))

    assert _endpoint_serves(platform, endpoint) == [(ab_model_name(model), "1")]
    ab_inputs = mlflow.models.get_model_info(f"models:/{ab_model_name(model)}/1").signature.inputs
    assert ab_inputs == mlflow.models.get_model_info(f"models:/{model}/1").signature.inputs
    assert running_experiment(model).started_at is not None


# --- the task: deploy, idempotence, experiment start -------------------------------------------


def test_the_task_serves_the_experiment_once_and_records_when_it_started(platform, model, caplog):
    """Deploy runs after every validation and in the rollout job: the second run changes nothing,
    and the experiment's start is the first time the endpoint served the challenger."""
    _experiment(platform, model)
    endpoint = f"rollout-{model.rsplit('_', 1)[-1]}"
    config = build_config(
        DeployConfig, _arguments(model, "canary", "--challenger-percent=20", endpoint=endpoint)
    )
    deployer = endpoint_deployer(platform)

    deploy.run(platform, config)

    assert deployer.serves(endpoint_spec(platform, config))
    started = running_experiment(model).started_at
    assert started is not None
    with caplog.at_level(logging.INFO, logger="mlops_template.tasks.deploy"):
        deploy.run(platform, config)
    assert f"endpoint {endpoint} already serves" in caplog.text
    assert running_experiment(model).started_at == started

    conclude_rollback(running_experiment(model), "worse live")
    deploy.run(platform, config)
    champion_only = endpoint_spec(platform, config)
    assert _served(champion_only) == [(model, "1", 100)]
    assert deployer.serves(champion_only)


def test_the_task_without_a_champion_warns_and_succeeds(platform, model, caplog):
    _register(platform, model, 2.0, "challenger", REJECTED)
    with caplog.at_level(logging.WARNING, logger="mlops_template.tasks.deploy"):
        deploy.run(platform, build_config(DeployConfig, _arguments(model, "canary")))
    assert "nothing to deploy" in caplog.text


# --- the sticky assignment ---------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_each_key_meets_one_variant_in_the_configured_share(share):
    """Over 10,000 keys the challenger's share is within ±3 points of the configured one; a key
    asked again (in another order, alone or in another batch) meets the same variant."""
    keys = pd.Series([f"customer-{n}" for n in range(10_000)])
    assigned = challenger_rows(keys, share)
    assert assigned.mean() == pytest.approx(share, abs=0.03)
    shuffled = keys.sample(frac=1.0, random_state=11)
    assert (challenger_rows(shuffled, share) == assigned[shuffled.index.to_numpy()]).all()
    singles = np.concatenate([challenger_rows(keys.iloc[n : n + 1], share) for n in range(0, 10_000, 97)])
    assert (singles == assigned[::97]).all()
