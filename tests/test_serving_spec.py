"""The endpoint spec: validation, alias resolution, and the Databricks SDK request it builds."""

from __future__ import annotations

import logging

import mlflow
import pytest
from databricks.sdk.service.serving import (
    AiGatewayConfig,
    EndpointCoreConfigInput,
    EndpointTag,
    ServingEndpointPermissionLevel,
)
from pydantic import ValidationError

from mlops_template.registry.experiment import EXPERIMENT
from mlops_template.registry.versions import GATE_OUTCOME_TAG, set_version_tags
from mlops_template.serving.deploy import endpoint_deployer
from mlops_template.serving.spec import (
    EndpointConfig,
    InferenceTableSpec,
    MissingChampionError,
    PermissionLevel,
    PermissionSpec,
    RouteSpec,
    ServedEntitySpec,
    StickyABSpec,
    build_endpoint_config,
    endpoint_config,
    served_versions,
)
from mlops_template.tasks.common import TaskArgumentError, build_config
from mlops_template.tasks.deploy import DeployConfig, endpoint_spec, run
from test_serving_support import register_regression_model

MODEL = "test.serving_spec.scorer"
TABLE = InferenceTableSpec(
    enabled=True, catalog_name="test", schema_name="serving_spec", table_name_prefix="scores"
)


def _config(**overrides) -> EndpointConfig:
    settings = {
        "endpoint_name": "scores-dev",
        "model_name": MODEL,
        "champion_version": "3",
        "challenger_version": "4",
        "challenger_traffic_percent": 20,
        "workload_size": "Small",
        "scale_to_zero": True,
        "inference_table": TABLE,
        "git_sha": "abc123",
    }
    return endpoint_config(**(settings | overrides))


def _entity(name: str) -> ServedEntitySpec:
    return ServedEntitySpec(name=name, entity_name=MODEL, entity_version="1")


def test_champion_and_challenger_split_traffic_by_percentage():
    config = _config()
    assert [(e.name, e.entity_version) for e in config.served_entities] == [
        ("scorer-3", "3"),
        ("scorer-4", "4"),
    ]
    assert [(r.served_entity_name, r.traffic_percentage) for r in config.routes] == [
        ("scorer-3", 80),
        ("scorer-4", 20),
    ]
    assert config.tags == {
        "model_name": MODEL,
        "model_version": "3",
        "challenger_version": "4",
        "git_sha": "abc123",
    }


@pytest.mark.parametrize(("challenger", "percent"), [(None, 20), ("4", 0)])
def test_without_challenger_or_traffic_the_champion_serves_alone(challenger, percent):
    config = _config(challenger_version=challenger, challenger_traffic_percent=percent)
    assert [(r.served_entity_name, r.traffic_percentage) for r in config.routes] == [("scorer-3", 100)]
    assert "challenger_version" not in config.tags


def test_routes_must_sum_to_100():
    with pytest.raises(ValidationError, match=r"must sum to 100 percent, got 90 \(a: 70, b: 20\)"):
        EndpointConfig(
            name="e",
            model_name=MODEL,
            served_entities=[_entity("a"), _entity("b")],
            routes=[
                RouteSpec(served_entity_name="a", traffic_percentage=70),
                RouteSpec(served_entity_name="b", traffic_percentage=20),
            ],
            inference_table=TABLE,
        )


def test_routes_must_name_each_served_entity_once():
    with pytest.raises(ValidationError, match="must name each served entity"):
        EndpointConfig(
            name="e",
            model_name=MODEL,
            served_entities=[_entity("a")],
            routes=[RouteSpec(served_entity_name="b", traffic_percentage=100)],
            inference_table=TABLE,
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_name": "scorer"}, "three-level"),
        ({"endpoint_name": "scores dev"}, "String should match pattern"),
        ({"challenger_traffic_percent": 120}, r"within 0..100, got 120"),
        ({"workload_size": "Huge"}, "'Small', 'Medium' or 'Large'"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_inference_table_needs_a_valid_table_name():
    with pytest.raises(ValidationError, match="three-level"):
        InferenceTableSpec(enabled=True, catalog_name="test", schema_name="s", table_name_prefix="bad-prefix")


def test_the_databricks_request_parses_back_with_the_sdk_classes():
    request = build_endpoint_config(_config(workload_size="Medium", scale_to_zero=False))
    core = EndpointCoreConfigInput.from_dict(request.config.as_dict())
    assert core.name == "scores-dev"
    assert [
        (e.name, e.entity_name, e.entity_version, e.workload_size, e.scale_to_zero_enabled)
        for e in core.served_entities
    ] == [
        ("scorer-3", MODEL, "3", "Medium", False),
        ("scorer-4", MODEL, "4", "Medium", False),
    ]
    assert [(r.served_entity_name, r.traffic_percentage) for r in core.traffic_config.routes] == [
        ("scorer-3", 80),
        ("scorer-4", 20),
    ]
    gateway = AiGatewayConfig.from_dict(request.ai_gateway.as_dict()).inference_table_config
    assert (gateway.enabled, gateway.catalog_name, gateway.schema_name, gateway.table_name_prefix) == (
        True,
        "test",
        "serving_spec",
        "scores",
    )
    assert EndpointTag.from_dict({"key": "git_sha", "value": "abc123"}) in request.tags


def test_the_sticky_ab_model_is_the_only_served_entity_on_databricks():
    sticky = StickyABSpec(
        key_column="user_id",
        challenger_share=0.3,
        champion_version="3",
        challenger_version="4",
        model_version="7",
    )
    request = build_endpoint_config(_config(sticky_ab=sticky))
    core = EndpointCoreConfigInput.from_dict(request.config.as_dict())
    assert [(e.name, e.entity_name, e.entity_version) for e in core.served_entities] == [
        ("scorer_ab-7", f"{MODEL}_ab", "7")
    ]
    assert [(r.served_entity_name, r.traffic_percentage) for r in core.traffic_config.routes] == [
        ("scorer_ab-7", 100)
    ]
    assert {t.key: t.value for t in request.tags}["ab_model_version"] == "7"


def test_aliases_resolve_to_versions_through_the_registry(platform):
    platform.configure_mlflow()
    name = "test.serving_spec.alias_model"
    with pytest.raises(MissingChampionError, match=r"no version with alias 'champion'.*train and promote"):
        served_versions(mlflow.MlflowClient(), name)
    first = register_regression_model(platform, name, slope=2.0, aliases=("champion", "challenger"))
    assert served_versions(mlflow.MlflowClient(), name) == (first, None)
    second = register_regression_model(platform, name, slope=2.5, aliases=("challenger",))
    assert served_versions(mlflow.MlflowClient(), name) == (first, second)


def test_a_query_group_gets_a_permission_level_the_sdk_knows():
    """The permission levels are the SDK's `ServingEndpointPermissionLevel`."""
    deployed = _config(query_group="readers")
    assert deployed.permissions == [PermissionSpec(group_name="readers", permission_level="CAN_QUERY")]
    levels = {level.value for level in ServingEndpointPermissionLevel}
    assert set(PermissionLevel.__args__) == levels  # the SDK's serving endpoint permission levels
    with pytest.raises(ValidationError):
        PermissionSpec(group_name="readers", permission_level="CAN_RUN")


def test_the_deploy_task_deploys_only_when_the_endpoint_does_not_serve_the_wanted_config(platform, caplog):
    """The pipeline runs deploy after every validation: the same champion/challenger is not redeployed."""
    model, endpoint = "test.serving_spec.idempotent_model", "scores-idempotent"
    platform.configure_mlflow()
    register_regression_model(platform, model, slope=2.0, aliases=("champion",))
    challenger = register_regression_model(platform, model, slope=3.0, aliases=("challenger",))
    set_version_tags(model, int(challenger), {GATE_OUTCOME_TAG: EXPERIMENT})
    arguments = [
        f"--model-name={model}",
        f"--endpoint-name={endpoint}",
        "--schema=test.serving_spec",
        "--rollout=canary",
        "--challenger-percent=20",
        "--query-group=score-readers",
    ]
    deployer = endpoint_deployer(platform)
    run(platform, build_config(DeployConfig, arguments))
    first = endpoint_spec(platform, build_config(DeployConfig, arguments))
    assert first.permissions == [PermissionSpec(group_name="score-readers")]
    assert deployer.serves(first)
    with caplog.at_level(logging.INFO, logger="mlops_template.tasks.deploy"):
        run(platform, build_config(DeployConfig, [*arguments, "--git-sha=later"]))
    assert f"endpoint {endpoint} already serves" in caplog.text

    caplog.clear()
    changed = build_config(DeployConfig, [*arguments[:-2], "--challenger-percent=30"])
    with caplog.at_level(logging.INFO, logger="mlops_template.tasks.deploy"):
        run(platform, changed)
    assert f"endpoint {endpoint} does not serve" in caplog.text
    deployed = endpoint_spec(platform, changed)
    assert [r.traffic_percentage for r in deployed.routes] == [70, 30]
    assert deployed.permissions == []
    assert deployer.serves(deployed) and not deployer.serves(first)


@pytest.mark.parametrize("name", ["scores-dev-józef", "scores dev", "t" * 64])
def test_the_deploy_task_refuses_an_endpoint_name_databricks_refuses_before_touching_anything(name):
    """Endpoint names: "alphanumeric characters, dashes, and underscores" (databricks-sdk serving.py,
    CreateServingEndpoint.name). The dev name carries `${workspace.current_user.short_name}`, which keeps
    Unicode letters (databricks/cli libs/textutil), so the task says how to choose another name."""
    arguments = ["--model-name=a.b.c", "--schema=a.b", f"--endpoint-name={name}"]
    with pytest.raises(TaskArgumentError, match=r"not a valid serving endpoint name.*--var endpoint_name"):
        build_config(DeployConfig, arguments)
