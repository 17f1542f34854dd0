"""Task `deploy`: reconcile the serving endpoint with the registry and the rollout policy.

The endpoint serves the champion alone, unless a live experiment runs (`running_experiment`: a
challenger the gate passed as `experiment`, neither promoted nor rolled back yet) and the policy
tries it live: `canary` serves champion and challenger with a per-request split
(`--challenger-percent` to the challenger); `ab_test` serves the sticky A/B model `<model>_ab`,
which keeps each value of `--ab-key-column` on one variant (`--challenger-percent` of the keys to
the challenger). `replace` never serves a challenger. The task is idempotent: it changes nothing
when the endpoint already serves what it should, and records when the challenger began being served.

`--serving-features=lookup` (default) serves models that look their features up in the online store:
every served entity gets `ENABLE_FEATURE_TRACING=true`, so the inference table logs the features
looked up (Databricks: "Log feature lookup DataFrames to inference tables"); `request` serves models
whose clients send every input (Free Edition, which has no online store).

Under `ab_test` with a champion logged with feature lookups, the key must be one of the problem's
request inputs (`_check_ab_key`): the task refuses any other before it registers or deploys anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from mlflow import MlflowClient
from pydantic import Field, field_validator, model_validator

from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.registry.experiment import Experiment, RolloutPolicy, mark_started, running_experiment
from mlops_template.serving.ab_registry import register_ab_model
from mlops_template.serving.deploy import endpoint_deployer
from mlops_template.serving.spec import (
    ENDPOINT_NAME_PATTERN,
    EndpointConfig,
    InferenceTableSpec,
    MissingChampionError,
    StickyABSpec,
    WorkloadSize,
    endpoint_config,
    served_versions,
)
from mlops_template.tasks.common import (
    PipelineTaskConfig,
    ServingFeatures,
    TaskArgumentError,
    task_entry_point,
)

log = logging.getLogger(__name__)

# The served entity variable that logs the looked-up features in the inference table.
FEATURE_TRACING = {"ENABLE_FEATURE_TRACING": "true"}


class DeployConfig(PipelineTaskConfig):
    """`--schema=catalog.schema`, as every pipeline task takes it, is where the inference tables go."""

    model_name: str
    endpoint_name: str
    inference_table_enabled: bool = False
    inference_table_prefix: str = ""  # default: the endpoint name with '-' as '_'
    workload_size: WorkloadSize = "Small"
    scale_to_zero: bool = True
    rollout: RolloutPolicy = "replace"
    challenger_percent: int = Field(default=10, ge=1, le=99)  # of requests (canary) or keys (ab_test)
    ab_key_column: str = ""  # the request column keeping a caller on one variant (ab_test only)
    experiment_name: str = ""  # where the A/B model is logged (needed with ab_test)
    git_sha: str = ""
    query_group: str = ""  # a group granted CAN_QUERY on the endpoint; empty: none
    ready_timeout_minutes: int = Field(default=45, gt=0)  # per wait for a config update
    serving_features: ServingFeatures = "lookup"  # lookup: from the online store; request: sent

    @field_validator("endpoint_name")
    @classmethod
    def _valid_endpoint_name(cls, name: str) -> str:
        if not ENDPOINT_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"'{name}' is not a valid serving endpoint name (ASCII letters, digits, '-' and '_', at most "
                "63 characters); in dev it carries your user name: deploy with --var endpoint_name=<name>"
            )
        return name

    @model_validator(mode="after")
    def _ab_test_has_its_key(self) -> DeployConfig:
        if self.rollout == "ab_test" and not self.ab_key_column:
            raise ValueError(
                "--rollout=ab_test needs --ab-key-column: the request column whose value keeps each caller "
                "on one variant (bundle variable ab_key_column, e.g. --var ab_key_column=pickup_zip)"
            )
        if self.rollout == "ab_test" and not self.experiment_name:
            raise ValueError("--rollout=ab_test needs --experiment-name to log the A/B model in")
        return self

    @property
    def catalog(self) -> str:
        return self.schema_.split(".")[0]

    @property
    def schema_name(self) -> str:
        """The schema's own name, without its catalog."""
        return self.schema_.split(".")[1]

    @property
    def table_prefix(self) -> str:
        return self.inference_table_prefix or self.endpoint_name.replace("-", "_")


@dataclass(frozen=True)
class Deployment:
    """What the endpoint should serve, and the experiment whose challenger it serves (if any)."""

    spec: EndpointConfig
    experiment: Experiment | None


def run(platform: Platform, config: DeployConfig) -> None:
    """Deploy the wanted endpoint unless it already serves it (the task runs after every validation
    and every rollout decision); once it serves an experiment's challenger, record when that began.

    Without a champion yet (the first challenger was rejected) there is nothing to serve: the task
    says so and succeeds, and the first run whose challenger passes the gate deploys the endpoint.
    """
    deployer = endpoint_deployer(platform, ready_timeout=timedelta(minutes=config.ready_timeout_minutes))
    try:
        wanted = planned_deployment(platform, config)
    except MissingChampionError as error:
        log.warning("nothing to deploy: %s", error)
        return
    spec = wanted.spec
    served = ", ".join(
        f"{entity.entity_name} v{entity.entity_version} {route.traffic_percentage}%"
        for entity, route in zip(spec.served_entities, spec.routes, strict=True)
    )
    if deployer.serves(spec):
        log.info("endpoint %s already serves %s: nothing to deploy", spec.name, served)
    else:
        log.info("endpoint %s does not serve %s yet: deploying", spec.name, served)
        deployer.deploy(spec)
    if wanted.experiment is not None:
        mark_started(wanted.experiment)


def endpoint_spec(platform: Platform, config: DeployConfig) -> EndpointConfig:
    """The endpoint the task deploys (see `planned_deployment`)."""
    return planned_deployment(platform, config).spec


def planned_deployment(platform: Platform, config: DeployConfig) -> Deployment:
    """The champion alone, or with the running experiment's challenger as the rollout policy says;
    the inference table and tags. A MissingChampionError when there is no champion."""
    platform.configure_mlflow()
    champion, _ = served_versions(MlflowClient(), config.model_name)
    experiment = running_experiment(config.model_name)
    if experiment is not None and config.rollout == "replace":
        log.warning(
            "version %d is a running experiment, but rollout replace serves no challenger: champion only",
            experiment.challenger,
        )
        experiment = None
    log.info(
        "rollout %s: champion version %s; challenger served: %s",
        config.rollout,
        champion,
        experiment.challenger if experiment else "none",
    )
    canary = experiment if config.rollout == "canary" else None
    ab_test = experiment if config.rollout == "ab_test" else None
    spec = endpoint_config(
        endpoint_name=config.endpoint_name,
        model_name=config.model_name,
        champion_version=champion,
        challenger_version=str(canary.challenger) if canary else None,
        challenger_traffic_percent=config.challenger_percent,
        workload_size=config.workload_size,
        scale_to_zero=config.scale_to_zero,
        inference_table=InferenceTableSpec(
            enabled=config.inference_table_enabled,
            catalog_name=config.catalog,
            schema_name=config.schema_name,
            table_name_prefix=config.table_prefix,
        ),
        git_sha=config.git_sha or "unknown",
        sticky_ab=_sticky_ab(platform, config, ab_test) if ab_test else None,
        query_group=config.query_group,
        environment_vars=FEATURE_TRACING if config.serving_features == "lookup" else None,
    )
    return Deployment(spec=spec, experiment=experiment)


def _sticky_ab(platform: Platform, config: DeployConfig, experiment: Experiment) -> StickyABSpec:
    """The registered A/B model over the experiment's champion and challenger (its key checked first)."""
    champion_uri = f"models:/{config.model_name}/{experiment.champion}"
    if platform.feature_store.logged_with_lookups(champion_uri):
        _check_ab_key(config.ab_key_column, load_problem().request_input_names)
    return register_ab_model(
        config.model_name,
        champion_version=str(experiment.champion),
        challenger_version=str(experiment.challenger),
        key_column=config.ab_key_column,
        challenger_share=config.challenger_percent / 100,
        experiment_id=platform.experiment_id(config.experiment_name),
    )


def _check_ab_key(key_column: str, request_inputs: list[str]) -> None:
    """Refuse an A/B key that is not one of the `request_inputs` (for a champion that looks its
    features up: its A/B model is logged with the champion's feature spec, `ab_registry`), as the
    feature store wrapper hands the model it wraps only the spec's columns, the request inputs and
    the looked-up features (databricks/ml_features/_training_scoring_client/_training_scoring_client.py:
    `udf_input_columns = [ci.output_name for ci in feature_spec.column_infos if ci.include]`): any
    other key column would never reach the A/B model, which would fail every request.
    """
    if key_column in request_inputs:
        return
    raise TaskArgumentError(
        f"--ab-key-column={key_column} is not a request input, and the champion looks its features up: "
        f"on Databricks its A/B model would never receive {key_column} (a model logged with feature "
        "lookups is given only its feature spec's columns, the request inputs and the looked-up "
        "features: databricks-feature-engineering `udf_input_columns = [ci.output_name for ci in "
        "feature_spec.column_infos if ci.include]`), and every request would fail. Key the A/B test "
        f"by a request input, one of {request_inputs} (bundle variable ab_key_column), or train and "
        "serve with serving_features=request (models logged plainly, clients send every input and the "
        "key as an extra column)"
    )


main = task_entry_point(DeployConfig, run)
