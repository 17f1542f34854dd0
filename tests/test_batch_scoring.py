"""Batch scoring with spark_udf on real local Spark and the real local MLflow registry.

The problem is the regression flavour of the churn spec (tests/regression_spec.py): one `double`
prediction per row; a classifier's probabilities are checked by tests/churn.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import mlflow
import numpy as np
import pytest
from pyspark.sql import functions as F

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.platform import MissingTableError
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.registry.versions import promote, register_challenger
from mlops_template.scoring.batch import NoModelVersionError, check_scoring_input, resolve_alias
from mlops_template.tasks import batch_score
from mlops_template.tasks.common import build_config
from mlops_template.training.config import TrainingConfig
from mlops_template.training.dataset import build_feature_set, build_training_set, feature_training_set
from mlops_template.training.model import input_columns, train_model
from mlops_template.training.tracking import FeatureServing, RunContext, log_training_run
from regression_spec import PROBLEM, REFERENCE


def run_task(platform: LocalPlatform, task, config_type, **arguments: str) -> None:
    """Run a task module's `run` with arguments given as the job passes them."""
    config = build_config(config_type, [f"--{k.replace('_', '-')}={v}" for k, v in arguments.items()])
    task.run(platform, config)


@pytest.fixture(scope="module", autouse=True)
def _problem() -> Iterator[None]:
    """The tasks of this module load the regression flavour of churn."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROBLEM_VARIABLE, REFERENCE)
        yield


@pytest.fixture(scope="module")
def tables(churn_schema: str) -> dict[str, str]:
    """The prepared events and activity features (made by the pipeline's own tasks), and the
    predictions table batch scoring writes."""
    return {
        "schema": churn_schema,
        "prepared": PROBLEM.prepared_table_name(churn_schema),
        "predictions": PROBLEM.predictions_table_name(churn_schema),
    }


@pytest.fixture(scope="module")
def model_name(platform: LocalPlatform, tables: dict[str, str]) -> Iterator[str]:
    """A model with two registered versions; version 1 is champion."""
    platform.configure_mlflow()
    name = f"test.scoring_{uuid.uuid4().hex[:8]}.model"
    events = platform.read_table(tables["prepared"])
    frame = build_training_set(platform, PROBLEM, events, tables["schema"]).cache()
    context = RunContext(tables["prepared"], PROBLEM.feature_table_names(tables["schema"]), "test", "1")
    for alpha in (1.0, 1_000.0):
        training = TrainingConfig.from_overrides({"alpha": alpha}, PROBLEM)
        run = log_training_run(
            platform.experiment_id("/Shared/test-scoring"), train_model(frame, training, PROBLEM), context
        )
        register_challenger(name, run)
    frame.unpersist()
    promote(name, 1)
    yield name


def score(platform: LocalPlatform, model_name: str, schema: str, **extra: str) -> None:
    run_task(
        platform, batch_score, batch_score.BatchScoreConfig, model_name=model_name, schema=schema, **extra
    )


def test_spark_predictions_equal_in_process_predict_of_the_champion(platform, tables, model_name):
    score(platform, model_name, tables["schema"])
    predictions = platform.read_table(tables["predictions"]).toPandas().set_index(PROBLEM.row_id)
    events = platform.read_table(tables["prepared"])
    assert len(predictions) == events.count()
    assert set(predictions["model_version"]) == {1}
    assert set(predictions["model_alias"]) == {"champion"}
    assert "predicted_label" not in predictions.columns  # a regressor's prediction is the value
    rows = build_feature_set(platform, PROBLEM, events, tables["schema"])
    frame = rows.select(PROBLEM.row_id, *input_columns(PROBLEM)).toPandas()
    expected = mlflow.pyfunc.load_model(f"models:/{model_name}/1").predict(frame[PROBLEM.input_names])
    actual = predictions.loc[frame[PROBLEM.row_id], "prediction"].to_numpy()
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-6)


def test_rescoring_after_a_promotion_replaces_rows_without_duplicates(platform, tables, model_name):
    score(platform, model_name, tables["schema"])
    before = platform.read_table(tables["predictions"]).count()
    promote(model_name, 2)
    try:
        score(platform, model_name, tables["schema"])
    finally:
        promote(model_name, 1)
    after = platform.read_table(tables["predictions"])
    assert after.count() == before
    assert after.select(PROBLEM.row_id).distinct().count() == before
    assert {row["model_version"] for row in after.select("model_version").distinct().collect()} == {2}


def test_a_window_scores_only_its_rows_and_keeps_the_others(platform, tables, model_name):
    score(platform, model_name, tables["schema"])
    total = platform.read_table(tables["predictions"]).count()
    score(platform, model_name, tables["schema"], start="2024-01-10", end="2024-01-11")
    predictions = platform.read_table(tables["predictions"])
    assert predictions.count() == total
    latest = predictions.agg(F.max("scored_at")).first()[0]
    rescored = predictions.where(F.col("scored_at") == latest)
    assert 0 < rescored.count() < total
    days = {row[0].date().isoformat() for row in rescored.select(PROBLEM.event_timestamp).collect()}
    assert days == {"2024-01-10"}


def test_no_champion_says_to_run_the_pipeline_first(platform, tables):
    platform.configure_mlflow()
    with pytest.raises(NoModelVersionError, match="no version with alias 'champion'.*run the pipeline job"):
        resolve_alias("test.scoring_none.model", "champion")


def test_the_task_without_a_champion_scores_nothing_says_why_and_succeeds(platform, tables, caplog):
    """Issue 11 §1.7: a first run whose challenger is rejected has no champion; batch_score must not fail."""
    platform.configure_mlflow()
    with caplog.at_level("WARNING", logger="mlops_template.tasks.batch_score"):
        score(platform, "test.scoring_none.model", "test.scoring_none")
    assert "nothing scored" in caplog.text and "no version with alias 'champion'" in caplog.text
    assert not platform.table_exists(PROBLEM.predictions_table_name("test.scoring_none"))


def test_missing_feature_table_says_to_run_the_feature_job(platform, tables, model_name):
    schema = "test.scoring_nofeatures"
    platform.save_table(platform.read_table(tables["prepared"]), PROBLEM.prepared_table_name(schema))
    missing = f"{schema}.customer_activity does not exist.*Run the feature job"
    with pytest.raises(MissingTableError, match=missing):
        score(platform, model_name, schema)


def test_rows_missing_model_inputs_are_rejected_naming_the_columns(platform, tables):
    rows = platform.read_table(tables["prepared"])  # no feature looked up
    with pytest.raises(ValueError, match=r"lack the columns \['events_7d', 'mean_minutes_7d'\]"):
        check_scoring_input(rows, PROBLEM)


@pytest.fixture(scope="module")
def looked_up_model_name(platform: LocalPlatform, tables: dict[str, str]) -> str:
    """A champion logged with its feature lookups (the train task's serving_features=lookup)."""
    platform.configure_mlflow()
    name = f"test.scoring_{uuid.uuid4().hex[:8]}.looked_up"
    events = platform.read_table(tables["prepared"])
    trained = train_model(
        build_training_set(platform, PROBLEM, events, tables["schema"]),
        TrainingConfig.from_overrides({}, PROBLEM),
        PROBLEM,
    )
    serving = feature_training_set(platform, PROBLEM, events, tables["schema"], with_row_id=False)
    context = RunContext(tables["prepared"], PROBLEM.feature_table_names(tables["schema"]), "test", "1")
    run = log_training_run(
        platform.experiment_id("/Shared/test-scoring"),
        trained,
        context,
        FeatureServing(platform.feature_store, serving),
    )
    register_challenger(name, run)
    promote(name, 1)
    return name


def test_a_champion_logged_with_lookups_scores_the_point_in_time_features(
    platform, tables, looked_up_model_name
):
    """fe.score_batch looks a model's features up from its feature spec's tables "Unless present in
    df" (databricks/feature_engineering/client.py, score_batch): the task gives it the prepared rows'
    keys and request inputs only, and its predictions equal the model's on the rows joined with
    their point-in-time features (the path of a model logged plainly)."""
    assert platform.feature_store.logged_with_lookups(f"models:/{looked_up_model_name}/1")
    schema = "test.scoring_lookups"  # its own predictions table; the features come from the model's tables
    events = platform.read_table(tables["prepared"])
    platform.save_table(events, PROBLEM.prepared_table_name(schema))
    score(platform, looked_up_model_name, schema)
    predictions = (
        platform.read_table(PROBLEM.predictions_table_name(schema)).toPandas().set_index(PROBLEM.row_id)
    )
    assert len(predictions) == events.count()
    rows = build_feature_set(platform, PROBLEM, events, tables["schema"])
    # In the training set's types, which the signature of a model logged with lookups has.
    frame = rows.select(PROBLEM.row_id, *PROBLEM.input_names).toPandas()
    model = mlflow.pyfunc.load_model(f"models:/{looked_up_model_name}/1")
    expected = model.predict(frame[PROBLEM.input_names])
    actual = predictions.loc[frame[PROBLEM.row_id], "prediction"].to_numpy()
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=1e-6)


def test_rows_for_a_model_with_lookups_need_only_keys_and_request_inputs(platform, tables):
    rows = platform.read_table(tables["prepared"])
    check_scoring_input(rows, PROBLEM, looked_up=True)
    with pytest.raises(
        ValueError, match=r"lack the columns \['plan'\]: score rows of the prepare_data table$"
    ):
        check_scoring_input(rows.drop("plan"), PROBLEM, looked_up=True)
