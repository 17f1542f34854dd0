"""The problem spec's sample data for the benchmarks: prepared rows, feature tables, a model.

Everything comes from the spec `load_problem()` returns (`$MLOPS_PROBLEM` selects another one):
its `sample_source` generates the source rows, `prepare` cleans them, the features task writes
its feature tables, the generic training code builds the training set and trains its model (logged
with its feature lookups on request, as task `train` with `serving_features=lookup`), and task
`publish_features` publishes the feature tables to the local online store.
"""

from __future__ import annotations

from pyspark.sql import DataFrame

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.problem_spec import ProblemSpec
from mlops_template.registry.versions import register_challenger
from mlops_template.tasks import publish_features
from mlops_template.tasks.features import FeaturesConfig, run
from mlops_template.training.config import TrainingConfig
from mlops_template.training.dataset import build_training_set, feature_training_set
from mlops_template.training.model import train_model
from mlops_template.training.tracking import FeatureServing, RunContext, log_training_run


def prepare_sample(
    platform: LocalPlatform, spec: ProblemSpec, schema: str, rows: int, seed: int
) -> DataFrame:
    """`rows` generated source rows cleaned by `spec.prepare`, saved as the prepared table of `schema`."""
    if spec.sample_source is None:
        raise SystemExit(
            f"problem spec {spec.name!r} has no sample_source, and the benchmarks generate their rows "
            "with it: give the spec one, or set $MLOPS_PROBLEM to a spec that has one"
        )
    name = spec.prepared_table_name(schema)
    platform.save_table(spec.prepare(spec.sample_source(platform.spark, rows, seed)), name)
    return platform.read_table(name)


def write_features(platform: LocalPlatform, schema: str) -> None:
    """The features task: every feature table of the spec computed from the prepared table of `schema`."""
    platform.task_values.current_task = "features"
    run(platform, FeaturesConfig.model_validate({"schema": schema}))


def sample_training_set(
    platform: LocalPlatform, spec: ProblemSpec, schema: str, rows: int, seed: int
) -> DataFrame:
    """The point-in-time training set of `rows` generated source rows, its tables in `schema`."""
    prepared = prepare_sample(platform, spec, schema, rows, seed)
    write_features(platform, schema)
    return build_training_set(platform, spec, prepared, schema)


def publish_feature_tables(platform: LocalPlatform, schema: str, online_store: str) -> None:
    """Task `publish_features`: every feature table of `schema` published to the local online store."""
    config = {"schema": schema, "online_store": online_store}
    publish_features.run(platform, publish_features.PublishFeaturesConfig.model_validate(config))


def register_model(
    platform: LocalPlatform,
    spec: ProblemSpec,
    model_name: str,
    training_set: DataFrame,
    schema: str,
    *,
    feature_lookups: bool = False,
) -> int:
    """The spec's model with its default parameters, trained, logged and registered; its version.
    With `feature_lookups` it is logged as task `train` logs it with `serving_features=lookup`:
    through the feature store with the lookups of the prepared rows, so a request sends the
    request inputs alone."""
    trained = train_model(training_set, TrainingConfig.defaults(spec), spec)
    context = RunContext(spec.prepared_table_name(schema), spec.feature_table_names(schema), "bench", "0")
    lookups = None
    if feature_lookups:
        rows = platform.read_table(spec.prepared_table_name(schema))
        serving_set = feature_training_set(platform, spec, rows, schema, with_row_id=False)
        lookups = FeatureServing(platform.feature_store, serving_set)
    training_run = log_training_run(platform.experiment_id(f"/bench/{model_name}"), trained, context, lookups)
    return register_challenger(model_name, training_run)
