"""Tasks of job smoke: one cheap check per platform interface, on scratch names only.

Run it on a workspace before the pipeline (`databricks bundle run smoke -t T`; locally
`mlops run smoke -t T`). Each task fails with a `SmokeCheckError` naming the interface that broke
and what to check. The tables and the model it writes are named `smoke_*` in the pipeline schema;
its last task deletes them.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import pandas as pd
from databricks.sdk.service.serving import AiGatewayConfig, EndpointCoreConfigInput
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from pyspark.sql import functions as F
from sklearn.linear_model import LinearRegression

from mlops_template.platform import Platform
from mlops_template.platform.names import split_name
from mlops_template.registry.versions import is_not_found
from mlops_template.serving.spec import (
    CHAMPION,
    InferenceTableSpec,
    build_endpoint_config,
    endpoint_config,
    served_versions,
)
from mlops_template.tasks.common import TaskConfig, task_entry_point

log = logging.getLogger(__name__)

SMOKE_VALUE_KEY = "smoke_value"
SMOKE_VALUE = "ok"
_TABLE_HINT = (
    "the job's principal needs USE CATALOG, USE SCHEMA, CREATE TABLE and MODIFY on the schema "
    "(run `mlops doctor -t T`), and the name must be catalog.schema.table"
)
_MODEL_HINT = (
    "the registry the platform configures (databricks-uc on Databricks, local-uc locally), "
    "CREATE MODEL on the schema, a three-level model name and a signature on the version"
)


class SmokeCheckError(RuntimeError):
    """A platform interface failed its smoke check; the message says which and what to check."""


@contextmanager
def _interface(name: str, hint: str) -> Iterator[None]:
    """Turn any failure inside into a SmokeCheckError naming the interface and what to check."""
    try:
        yield
    except SmokeCheckError:
        raise
    except Exception as error:
        raise SmokeCheckError(f"smoke check '{name}' failed: {error}. Check {hint}.") from error


def _expect(name: str, hint: str, expected: object, actual: object) -> None:
    if expected != actual:
        raise SmokeCheckError(
            f"smoke check '{name}' failed: expected {expected}, got {actual}. Check {hint}."
        )


# --- tables: save_table, merge_table -------------------------------------------------------------


class TableCheckConfig(TaskConfig):
    table: str


def check_table(platform: Platform, config: TableCheckConfig) -> None:
    """Write three rows, merge three by key (one null key): four rows, the null key replaced."""
    name = "write and merge a table (platform.save_table / merge_table)"
    schema = "k int, v string"
    with _interface(name, _TABLE_HINT):
        spark = platform.spark
        platform.save_table(spark.createDataFrame([(1, "a"), (2, "b"), (None, "x")], schema), config.table)
        platform.merge_table(
            spark.createDataFrame([(2, "b2"), (3, "c"), (None, "y")], schema), config.table, keys=["k"]
        )
        rows = sorted((r.k is None, r.k or 0, r.v) for r in platform.read_table(config.table).collect())
    expected = [(False, 1, "a"), (False, 2, "b2"), (False, 3, "c"), (True, 0, "y")]
    _expect(name, "that MERGE matches keys null-safely (t.k <=> s.k)", expected, rows)
    log.info("table %s: written and merged by key, %d rows", config.table, len(rows))


# --- feature tables: write_table, create_training_set --------------------------------------------


class FeatureTableCheckConfig(TaskConfig):
    feature_table: str


def check_feature_table(platform: Platform, config: FeatureTableCheckConfig) -> None:
    """Write a time-keyed feature table, then look features up as of three spine rows."""
    from databricks.feature_engineering import FeatureLookup

    name = "feature table (platform.feature_store.write_table / create_training_set)"
    hint = f"{_TABLE_HINT}; on Databricks the databricks-feature-engineering package in the job's environment"
    at = dt.datetime(2024, 1, 1, 10)
    hour = dt.timedelta(hours=1)
    with _interface(name, hint):
        spark = platform.spark
        features = spark.createDataFrame(
            [(1, at, 1.0), (1, at + hour, 2.0), (2, at, 5.0)], "entity_id int, ts timestamp, feature double"
        )
        platform.feature_store.write_table(
            config.feature_table,
            features,
            primary_keys=["entity_id", "ts"],
            timestamp_key="ts",
            description="Scratch feature table of the smoke job.",
        )
        spine = spark.createDataFrame(
            [(1, at + hour / 2), (1, at + hour * 1.5), (2, at - hour)], "entity_id int, lookup_time timestamp"
        )
        lookup = FeatureLookup(
            table_name=config.feature_table,
            lookup_key=["entity_id"],
            timestamp_lookup_key="lookup_time",
            feature_names=["feature"],
        )
        rows = platform.feature_store.create_training_set(spine, [lookup], label=None).load_df().collect()
    joined = sorted((r.entity_id, r.lookup_time, r.feature) for r in rows)
    expected = [(1, at + hour / 2, 1.0), (1, at + hour * 1.5, 2.0), (2, at - hour, None)]
    _expect(name, "the as-of join: the latest feature at or before each lookup time", expected, joined)
    log.info("feature table %s: written and looked up as of %d rows", config.feature_table, len(rows))


# --- model registry: a version with a signature, an alias ----------------------------------------


class ModelCheckConfig(TaskConfig):
    model_name: str
    experiment_name: str


def check_model(platform: Platform, config: ModelCheckConfig) -> None:
    """Register a tiny linear model (y = 2x + 1) with a signature and move `champion` to it."""
    name = "register a model version and set an alias (MLflow registry)"
    inputs = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    model = LinearRegression().fit(inputs, 2 * inputs["x"] + 1)
    with _interface(name, _MODEL_HINT):
        experiment_id = platform.experiment_id(config.experiment_name)
        with mlflow.start_run(experiment_id=experiment_id, run_name="smoke", tags={"smoke": "true"}):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(inputs, model.predict(inputs)),
                input_example=inputs.head(2),
                pip_requirements=["scikit-learn"],
                registered_model_name=config.model_name,
            )
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.set_registered_model_alias(config.model_name, CHAMPION, version)
        by_alias = client.get_model_version_by_alias(config.model_name, CHAMPION).version
    _expect(name, "that aliases resolve to the version they were set on", version, str(by_alias))
    log.info("model %s: version %s registered as %s", config.model_name, version, CHAMPION)


# --- batch scoring: mlflow.pyfunc.spark_udf ------------------------------------------------------


class ModelNameConfig(TaskConfig):
    model_name: str


def check_score(platform: Platform, config: ModelNameConfig) -> None:
    """Score two rows with the champion of the smoke model through spark_udf."""
    name = "score rows with mlflow.pyfunc.spark_udf"
    hint = f"that task `model` succeeded, and {_MODEL_HINT}"
    with _interface(name, hint):
        platform.configure_mlflow()
        rows = platform.spark.createDataFrame([(0.5,), (4.0,)], "x double")
        uri = f"models:/{config.model_name}@{CHAMPION}"
        predict = mlflow.pyfunc.spark_udf(platform.spark, uri, result_type="double", env_manager="local")
        scored = rows.select("x", predict(F.struct("x")).alias("prediction")).collect()
    for x, prediction in scored:  # Row unpacks in column order
        if prediction is None or not math.isclose(prediction, 2 * x + 1, rel_tol=1e-6):
            _expect(name, "the model's signature and the rows' column types", 2 * x + 1, prediction)
    log.info("scored %d rows with %s@%s", len(scored), config.model_name, CHAMPION)


# --- serving: the endpoint request, never deployed -----------------------------------------------


class EndpointSpecCheckConfig(TaskConfig):
    model_name: str
    endpoint_name: str
    inference_table_prefix: str


def check_endpoint_spec(platform: Platform, config: EndpointSpecCheckConfig) -> None:
    """Build the endpoint request for the champion and parse it back with the SDK's dataclasses."""
    name = "build the serving endpoint spec (serving.spec.endpoint_config / build_endpoint_config)"
    hint = "the endpoint name (letters, digits, '-', '_'), the inference table prefix and the champion alias"
    with _interface(name, hint):
        platform.configure_mlflow()
        champion, challenger = served_versions(MlflowClient(), config.model_name)
        catalog, schema, _ = split_name(config.model_name)
        spec = endpoint_config(
            endpoint_name=config.endpoint_name,
            model_name=config.model_name,
            champion_version=champion,
            challenger_version=challenger,
            challenger_traffic_percent=0,
            workload_size="Small",
            scale_to_zero=True,
            inference_table=InferenceTableSpec(
                enabled=True,
                catalog_name=catalog,
                schema_name=schema,
                table_name_prefix=config.inference_table_prefix,
            ),
            git_sha="smoke",
        )
        request = build_endpoint_config(spec)
        core = EndpointCoreConfigInput.from_dict(request.config.as_dict())
        gateway = AiGatewayConfig.from_dict(request.ai_gateway.as_dict()).inference_table_config
    served = [(e.entity_name, e.entity_version) for e in core.served_entities or []]
    _expect(name, hint, [(config.model_name, champion)], served)
    _expect(name, hint, (catalog, schema), (gateway.catalog_name, gateway.schema_name) if gateway else None)
    log.info("endpoint spec of %s: serves %s version %s (not deployed)", config.endpoint_name, *served[0])


# --- task values: the notebook sets one, a condition reads it ------------------------------------


class TaskValueCheckConfig(TaskConfig):
    value: str


def check_task_value(platform: Platform, config: TaskValueCheckConfig) -> None:
    """Runs only when the condition on the task value is false: fail, saying what arrived."""
    raise SmokeCheckError(
        f"smoke check 'task values' failed: condition value_gate read {SMOKE_VALUE_KEY}={config.value!r} "
        f"and was not met (the notebook sets {SMOKE_VALUE!r}). Check that notebook task set_value ran as "
        "a Python notebook and that value_gate compares the value it sets."
    )


# --- cleanup -------------------------------------------------------------------------------------


class CleanupConfig(TaskConfig):
    table: str
    feature_table: str
    model_name: str


def cleanup(platform: Platform, config: CleanupConfig) -> None:
    """Drop the scratch tables and delete the scratch model (absent ones are skipped)."""
    with _interface("clean up the smoke job's tables and model", _TABLE_HINT):
        for table in (config.table, config.feature_table):
            platform.spark.sql(f"DROP TABLE IF EXISTS {platform.table_name(table)}")
            log.info("dropped table %s", table)
        platform.configure_mlflow()
        try:
            MlflowClient().delete_registered_model(config.model_name)
            log.info("deleted model %s", config.model_name)
        except MlflowException as error:
            if not is_not_found(error):
                raise


main_table = task_entry_point(TableCheckConfig, check_table)
main_feature_table = task_entry_point(FeatureTableCheckConfig, check_feature_table)
main_model = task_entry_point(ModelCheckConfig, check_model)
main_score = task_entry_point(ModelNameConfig, check_score)
main_endpoint_spec = task_entry_point(EndpointSpecCheckConfig, check_endpoint_spec)
main_task_value = task_entry_point(TaskValueCheckConfig, check_task_value)
main_cleanup = task_entry_point(CleanupConfig, cleanup)
