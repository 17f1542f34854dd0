"""Sticky A/B: a stable hash assignment, the A/B pyfunc registered by the deploy task, served locally."""

from __future__ import annotations

import hashlib

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities.model_registry import ModelVersionSearch

from mlops_template.serving.ab_model import challenger_rows, key_bucket
from mlops_template.serving.ab_registry import register_ab_model
from mlops_template.serving.served_entities import served_entity_id
from mlops_template.serving.spec import EndpointConfig, load_endpoint_specs
from mlops_template.tasks.common import build_config
from mlops_template.tasks.deploy import DeployConfig, run
from test_serving_support import (
    deploy_champion_and_challenger,
    fare_inputs,
    invoke,
    records_body,
    register_fare_model,
    serving,
)

MODEL = "test.serving_ab.fare_model"
ENDPOINT = "fares-ab"
SHARE = 0.3


def test_a_key_maps_to_the_first_8_bytes_of_its_sha256():
    expected = int.from_bytes(hashlib.sha256(b"rider-17").digest()[:8], "big") / 2**64
    assert key_bucket("rider-17") == expected
    assert key_bucket(42) == key_bucket("42")
    assert key_bucket(None) == key_bucket(float("nan")) == 1.0  # no key: always the champion


def test_the_challenger_share_holds_over_many_keys_and_each_key_keeps_its_variant():
    keys = pd.Series([f"rider-{n}" for n in range(50_000)])
    first = challenger_rows(keys, SHARE)
    assert first.mean() == pytest.approx(SHARE, abs=0.01)
    shuffled = keys.sample(frac=1, random_state=1)
    assert (challenger_rows(shuffled, SHARE) == first[shuffled.index]).all()
    assert not challenger_rows(pd.Series([None, np.nan]), 0.99).any()


DEPLOY_ARGUMENTS = (
    f"--endpoint-name={ENDPOINT}",
    "--catalog=test",
    "--schema=serving_ab",
    "--inference-table-enabled=true",
    "--ab-key-column=rider_id",
    f"--ab-challenger-share={SHARE}",
    "--experiment-name=/serving-tests/ab",
    "--git-sha=abc",
)


def _deployed(platform) -> EndpointConfig:
    [config] = [c for c in load_endpoint_specs(platform.state_dir) if c.name == ENDPOINT]
    return config


@pytest.fixture(scope="module")
def ab_config(platform) -> EndpointConfig:
    """The deploy task run with sticky A/B on the local platform (registers `<model>_ab`, checks it)."""
    deploy_champion_and_challenger(platform, MODEL, *DEPLOY_ARGUMENTS)
    return _deployed(platform)


def test_the_task_serves_the_registered_ab_model_as_the_only_entity(ab_config, platform):
    assert [(e.entity_name, e.entity_version) for e in ab_config.served_entities] == [(f"{MODEL}_ab", "1")]
    assert ab_config.sticky_ab.key_column == "rider_id"
    assert (ab_config.sticky_ab.champion_version, ab_config.sticky_ab.challenger_version) == ("1", "2")
    rows = platform.read_table("test.serving_ab.fares_ab_payload").collect()
    [entity] = ab_config.served_entities
    assert [(row.status_code, row.served_entity_id) for row in rows] == [
        (200, served_entity_id(ENDPOINT, entity))
    ]
    again = register_ab_model(
        MODEL,
        champion_version="1",
        challenger_version="2",
        key_column="rider_id",
        challenger_share=SHARE,
        experiment_id=platform.experiment_id("/serving-tests/ab"),
    )
    assert again.model_version == "1"  # the same pair is not registered twice


def test_the_local_endpoint_keeps_each_key_on_one_variant(ab_config, tmp_path):
    frame = fare_inputs(2000, seed=21).assign(rider_id=[f"rider-{n}" for n in range(2000)])
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(frame)
    challenger = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(frame)
    expected_variant = np.where(challenger_rows(frame.rider_id, SHARE), "challenger", "champion")
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
        response = invoke(url, ENDPOINT, records_body(fare_inputs(1)))
    assert response.status_code == 400
    assert "rider_id" in response.json()["message"]


def test_a_second_ab_deployment_reads_the_pair_of_each_version_from_the_strict_registry(ab_config, platform):
    """Unity Catalog's `search_model_versions` returns `ModelVersionSearch` entities whose tags
    cannot be read (mlflow/entities/model_registry/model_version_search.py,
    mlflow/store/_unity_catalog/registry/rest_store.py); the local registry does the same
    (platform/uc_registry.py). Finding the version registered for a pair reads each version with
    `get_model_version`, so a second A/B deployment with a new challenger registers the next
    version, and an earlier pair still finds its own."""
    [hit, *_] = mlflow.MlflowClient().search_model_versions(f"name='{MODEL}_ab'")
    assert isinstance(hit, ModelVersionSearch)
    register_fare_model(platform, MODEL, slope=4.0, aliases=("challenger",))
    run(platform, build_config(DeployConfig, [f"--model-name={MODEL}", *DEPLOY_ARGUMENTS]))
    second = _deployed(platform)
    assert (second.sticky_ab.champion_version, second.sticky_ab.challenger_version) == ("1", "3")
    assert [(e.entity_name, e.entity_version) for e in second.served_entities] == [(f"{MODEL}_ab", "2")]
    first_pair = register_ab_model(
        MODEL,
        champion_version="1",
        challenger_version="2",
        key_column="rider_id",
        challenger_share=SHARE,
        experiment_id=platform.experiment_id("/serving-tests/ab"),
    )
    assert first_pair.model_version == "1"
