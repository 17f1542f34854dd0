"""The churn classifier through the generic training side: the pipeline's own tasks train, gate,
register and batch-score it, with `$MLOPS_PROBLEM` pointing at tests/churn/spec.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from churn.spec import PROBLEM, generate_events
from mlops_laptop.platform.local import LocalPlatform
from mlops_template.problem_spec import PROBLEM_VARIABLE
from mlops_template.registry.versions import CHALLENGER, CHAMPION, get_aliases, model_status
from mlops_template.tasks import batch_score, features, prepare_data, train, validate_model
from mlops_template.training.dataset import build_feature_set

EXPERIMENT = "/Shared/test-churn"


@pytest.fixture(scope="module")
def pipeline(platform: LocalPlatform) -> Iterator[dict[str, str]]:
    """prepare_data, features, train, validate_model and batch_score of the churn problem."""
    suffix = uuid.uuid4().hex[:8]
    names = {"schema": f"test.churn_{suffix}", "model_name": f"test.churn_{suffix}.churn_model"}
    source = f"test.churn_source_{suffix}.events"
    platform.save_table(generate_events(platform.spark, rows=3_000, seed=42), source)
    training = {"experiment_name": EXPERIMENT, "bundle_target": "test", "job_run_id": "9"}
    steps = [
        (prepare_data, prepare_data.PrepareDataConfig, {"source_table": source}),
        (features, features.FeaturesConfig, {}),
        (train, train.TrainConfig, {**training, "model_name": names["model_name"]}),
        (validate_model, validate_model.ValidateModelConfig, {"model_name": names["model_name"]}),
        (batch_score, batch_score.BatchScoreConfig, {"model_name": names["model_name"]}),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PROBLEM_VARIABLE, "churn.spec:PROBLEM")
        for task, config_type, parameters in steps:
            task.run(platform, config_type.model_validate({"schema": names["schema"], **parameters}))
        yield names


def test_the_classifier_passes_the_gate_on_the_classification_metrics(pipeline: dict[str, str]) -> None:
    name = pipeline["model_name"]
    assert get_aliases(name) == {CHALLENGER: 1, CHAMPION: 1}
    (status,) = model_status(name, spec=PROBLEM)
    assert list(status.metrics) == ["roc_auc", "log_loss", "brier", "accuracy"]
    assert status.primary_metric == "roc_auc" and status.primary_value is not None
    assert status.primary_value > 0.7  # the generator's plan, tickets and minutes carry real signal
    tags = MlflowClient().get_model_version(name, "1").tags
    assert tags["gate_outcome"] == "promoted"
    assert float(tags["gate_min_roc_auc"]) == PROBLEM.gate_thresholds["min_roc_auc"]
    assert float(tags["gate_roc_auc"]) == pytest.approx(status.primary_value)
    run = MlflowClient().get_run(status.run_id)
    assert run.data.params["problem"] == "churn"
    plots = {a.path for a in MlflowClient().list_artifacts(status.run_id, "plots")}
    assert plots == {"plots/roc.png", "plots/calibration.png"}  # logistic regression: no importances


def test_the_logged_model_takes_a_string_input_and_returns_probabilities(pipeline: dict[str, str]) -> None:
    uri = f"models:/{pipeline['model_name']}/1"
    signature = mlflow.models.get_model_info(uri).signature
    assert [(spec.name, spec.type.name) for spec in signature.inputs.inputs][:2] == [
        ("plan", "string"),
        ("minutes", "double"),
    ]
    request = pd.DataFrame(
        {
            "plan": ["basic", "premium", "enterprise"],  # a plan never seen in training still scores
            "minutes": [2.0, 60.0, 10.0],
            "support_tickets": [4.0, 0.0, 1.0],
            "events_7d": [1.0, None, 3.0],
            "mean_minutes_7d": [2.0, None, 10.0],
        }
    )
    probabilities = np.asarray(mlflow.pyfunc.load_model(uri).predict(request))
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities[0, 1] > probabilities[1, 1]  # basic with tickets churns more than premium


def test_batch_scoring_writes_the_probability_and_the_label_at_the_threshold(
    platform: LocalPlatform, pipeline: dict[str, str]
) -> None:
    schema = pipeline["schema"]
    predictions = platform.read_table(PROBLEM.predictions_table_name(schema)).toPandas()
    events = platform.read_table(PROBLEM.prepared_table_name(schema))
    assert len(predictions) == events.count()
    assert predictions["prediction"].between(0, 1).all()
    expected_labels = (predictions["prediction"] >= PROBLEM.classification_threshold).astype(int)
    assert (predictions["predicted_label"] == expected_labels).all()
    assert {"event_id", "event_ts", "customer_id"} <= set(predictions.columns)
    rows = build_feature_set(platform, PROBLEM, events.limit(50), schema).toPandas()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{pipeline['model_name']}/1")
    expected = np.asarray(pyfunc.predict(rows[PROBLEM.input_names].astype({"support_tickets": float})))[:, 1]
    scored = predictions.set_index("event_id").loc[rows["event_id"], "prediction"].to_numpy()
    np.testing.assert_allclose(scored, expected, rtol=1e-6)
