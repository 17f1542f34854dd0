"""Sticky A/B: a stable hash assignment, the A/B pyfunc registered by the deploy task, served locally."""

from __future__ import annotations

import hashlib

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities.model_registry import ModelVersionSearch

from mlops_laptop.serving.local_deploy import deployed_endpoint
from mlops_template.monitoring.unpack import parse_response
from mlops_template.registry.experiment import EXPERIMENT
from mlops_template.registry.versions import GATE_OUTCOME_TAG
from mlops_template.serving.ab_model import challenger_rows, key_bucket
from mlops_template.serving.ab_registry import register_ab_model
from mlops_template.serving.spec import EndpointConfig, StickyABSpec
from mlops_template.tasks.common import build_config
from mlops_template.tasks.deploy import DeployConfig, endpoint_spec, run
from test_serving_support import (
    deploy_champion_and_challenger,
    invoke,
    logged_endpoint,
    model_inputs,
    records_body,
    register_classifier,
    register_regression_model,
    serving,
)

MODEL = "test.serving_ab.scorer"
ENDPOINT = "scores-ab"
SHARE = 0.3


def test_a_key_maps_to_the_first_8_bytes_of_its_sha256():
    expected = int.from_bytes(hashlib.sha256(b"user-17").digest()[:8], "big") / 2**64
    assert key_bucket("user-17") == expected
    assert key_bucket(42) == key_bucket("42")
    assert key_bucket(None) == key_bucket(float("nan")) == 1.0  # no key: always the champion


def test_the_challenger_share_holds_over_many_keys_and_each_key_keeps_its_variant():
    keys = pd.Series([f"user-{n}" for n in range(50_000)])
    first = challenger_rows(keys, SHARE)
    assert first.mean() == pytest.approx(SHARE, abs=0.01)
    shuffled = keys.sample(frac=1, random_state=1)
    assert (challenger_rows(shuffled, SHARE) == first[shuffled.index]).all()
    assert not challenger_rows(pd.Series([None, np.nan]), 0.99).any()


def test_a_numeric_key_meets_one_variant_whatever_type_its_column_arrives_in():
    """MLflow's scoring server parses a JSON column of integers with a null in it as float64 (and
    the A/B key is declared `AnyType`, so it stays so): 42 and 42.0, an id above 2**53 and its
    float64, must land in one bucket, as must the same key whether its request had a null or not."""
    big = -4126742575656323992  # an xxhash64 row id, as taxi trip ids are
    alone = pd.DataFrame.from_records([{"key": 42}, {"key": big}])["key"]
    beside_a_null = pd.DataFrame.from_records([{"key": 42}, {"key": big}, {"key": None}])["key"]
    assert alone.dtype == "int64" and beside_a_null.dtype == "float64"
    buckets = [key_bucket(key) for key in alone]
    assert [key_bucket(key) for key in beside_a_null[:2]] == buckets
    assert key_bucket(np.int64(42)) == key_bucket(42.0) == key_bucket("42") == buckets[0]
    assert key_bucket(True) != key_bucket(1)  # a boolean key is not the number 1


DEPLOY_ARGUMENTS = (
    f"--endpoint-name={ENDPOINT}",
    "--schema=test.serving_ab",
    "--inference-table-enabled=true",
    "--rollout=ab_test",
    "--ab-key-column=user_id",
    f"--challenger-percent={round(SHARE * 100)}",
    "--experiment-name=/serving-tests/ab",
    "--git-sha=abc",
)


def _deployed(platform) -> EndpointConfig:
    """The spec the deploy task deploys (registering nothing again), checked against what the
    local control plane serves."""
    config = endpoint_spec(platform, build_config(DeployConfig, [f"--model-name={MODEL}", *DEPLOY_ARGUMENTS]))
    served = deployed_endpoint(platform, ENDPOINT).config.served_entities
    assert [(e.entity_name, e.entity_version) for e in served] == [
        (e.entity_name, e.entity_version) for e in config.served_entities
    ]
    return config


@pytest.fixture(scope="module")
def ab_config(platform) -> EndpointConfig:
    """The deploy task run with sticky A/B on the local platform (registers `<model>_ab`, checks it)."""
    deploy_champion_and_challenger(platform, MODEL, *DEPLOY_ARGUMENTS)
    return _deployed(platform)


def test_the_task_serves_the_registered_ab_model_as_the_only_entity(ab_config, platform):
    assert [(e.entity_name, e.entity_version) for e in ab_config.served_entities] == [(f"{MODEL}_ab", "1")]
    assert ab_config.sticky_ab.key_column == "user_id"
    assert (ab_config.sticky_ab.champion_version, ab_config.sticky_ab.challenger_version) == ("1", "2")
    tags = {tag.key: tag.value for tag in deployed_endpoint(platform, ENDPOINT).tags}
    assert (tags["challenger_version"], tags["ab_model_version"]) == ("2", "1")
    again = register_ab_model(
        MODEL,
        champion_version="1",
        challenger_version="2",
        key_column="user_id",
        challenger_share=SHARE,
        experiment_id=platform.experiment_id("/serving-tests/ab"),
    )
    assert again.model_version == "1"  # the same pair is not registered twice


def test_the_local_endpoint_keeps_each_key_on_one_variant(ab_config, tmp_path):
    frame = model_inputs(2000, seed=21).assign(user_id=[f"user-{n}" for n in range(2000)])
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(frame)
    challenger = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(frame)
    expected_variant = np.where(challenger_rows(frame.user_id, SHARE), "challenger", "champion")
    with serving([ab_config], tmp_path) as (url, _):
        answers = [
            invoke(url, ENDPOINT, records_body(frame.iloc[start : start + 250])).json()["predictions"]
            for start in range(0, 2000, 250)
        ]
        reordered = frame.iloc[::-1].iloc[:300]
        again = invoke(url, ENDPOINT, records_body(reordered)).json()["predictions"]
    answered = pd.DataFrame([row for answer in answers for row in answer])
    assert list(answered.variant) == list(expected_variant)
    assert (answered.variant == "challenger").mean() == pytest.approx(SHARE, abs=0.04)
    assert answered.prediction.to_numpy() == pytest.approx(
        np.where(expected_variant == "challenger", challenger, champion)
    )
    assert [row["variant"] for row in again] == list(expected_variant[::-1][:300])


def test_the_ab_model_needs_its_key_column(ab_config, tmp_path):
    with serving([ab_config], tmp_path) as (url, _):
        response = invoke(url, ENDPOINT, records_body(model_inputs(1)))
    assert response.status_code == 400
    assert "user_id" in response.json()["message"]


def test_a_second_ab_deployment_reads_the_pair_of_each_version_from_the_strict_registry(ab_config, platform):
    """Unity Catalog's `search_model_versions` returns `ModelVersionSearch` entities whose tags
    cannot be read (mlflow/entities/model_registry/model_version_search.py,
    mlflow/store/_unity_catalog/registry/rest_store.py); the local registry does the same
    (platform/uc_registry.py). Finding the version registered for a pair reads each version with
    `get_model_version`, so a second A/B deployment with a new challenger registers the next
    version, and an earlier pair still finds its own."""
    [hit, *_] = mlflow.MlflowClient().search_model_versions(f"name='{MODEL}_ab'")
    assert isinstance(hit, ModelVersionSearch)
    third = register_regression_model(platform, MODEL, slope=4.0, aliases=("challenger",))
    mlflow.MlflowClient().set_model_version_tag(MODEL, third, GATE_OUTCOME_TAG, EXPERIMENT)
    run(platform, build_config(DeployConfig, [f"--model-name={MODEL}", *DEPLOY_ARGUMENTS]))
    second = _deployed(platform)
    assert (second.sticky_ab.champion_version, second.sticky_ab.challenger_version) == ("1", "3")
    assert [(e.entity_name, e.entity_version) for e in second.served_entities] == [(f"{MODEL}_ab", "2")]
    first_pair = register_ab_model(
        MODEL,
        champion_version="1",
        challenger_version="2",
        key_column="user_id",
        challenger_share=SHARE,
        experiment_id=platform.experiment_id("/serving-tests/ab"),
    )
    assert first_pair.model_version == "1"


CLASSIFIER = "test.serving_ab.classifier"


@pytest.fixture(scope="module")
def classifier_ab(platform) -> StickyABSpec:
    """The sticky A/B model over two versions of a classifier logged to return class probabilities."""
    platform.configure_mlflow()
    champion = register_classifier(platform, CLASSIFIER, weight=0.5)
    challenger = register_classifier(platform, CLASSIFIER, weight=3.0)
    return register_ab_model(
        CLASSIFIER,
        champion_version=champion,
        challenger_version=challenger,
        key_column="user_id",
        challenger_share=SHARE,
        experiment_id=platform.experiment_id("/serving-tests/ab"),
    )


def test_a_classifier_ab_model_answers_each_rows_class_probabilities_from_its_variant(
    classifier_ab, ab_config, tmp_path
):
    """Served alone, a classifier answers `[p0, p1]` per row; the A/B model answers the same per row
    (with its variant), so monitoring reads P(label 1) from either. A flattened answer (two values
    per row laid end to end) would misplace every row's probability."""
    frame = model_inputs(200, seed=5).assign(user_id=[f"user-{n}" for n in range(200)])
    versions = (classifier_ab.champion_version, classifier_ab.challenger_version)
    champion, challenger = (
        mlflow.pyfunc.load_model(f"models:/{CLASSIFIER}/{v}").predict(frame) for v in versions
    )
    to_challenger = challenger_rows(frame.user_id, SHARE)
    expected = np.where(to_challenger[:, None], challenger, champion)
    assert expected.shape == (200, 2) and 0.2 < to_challenger.mean() < 0.4
    config = logged_endpoint("classifier-ab", CLASSIFIER, versions[0], sticky_ab=classifier_ab)
    with serving([config], tmp_path) as (url, _):
        response = invoke(url, "classifier-ab", records_body(frame))
    assert response.status_code == 200, response.text
    answered = pd.DataFrame(response.json()["predictions"])
    assert np.array(answered.prediction.tolist()) == pytest.approx(expected)
    assert list(answered.variant) == list(np.where(to_challenger, "challenger", "champion"))
    unpacked, _ = parse_response(response.text, classifier=True)
    assert [row["prediction"] for row in unpacked] == pytest.approx(expected[:, 1])
    prediction_types = {
        model: mlflow.models.get_model_info(uri).signature.outputs.to_dict()[0]["type"]
        for model, uri in (
            ("classifier", f"models:/{CLASSIFIER}_ab/{classifier_ab.model_version}"),
            ("regression", f"models:/{MODEL}_ab/{ab_config.sticky_ab.model_version}"),
        )
    }
    assert prediction_types == {"classifier": "array", "regression": "double"}
