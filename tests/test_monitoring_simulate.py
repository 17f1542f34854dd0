"""`mlops simulate-traffic --challenger-error-scale`: the ground truth it writes makes the
challenger's live error better or worse than it is, the champion's rows keep their true labels.

The churn spec (a binary classifier, predictions P(1)) and its regression flavour
(tests/regression_spec.py) give the spec objects. A row's variant comes from the sticky A/B
model's `variant` or from the `served-model-name` header Databricks sets on every answer (the
served entity, by default `<model>-<version>`:
https://docs.databricks.com/aws/en/machine-learning/model-serving/create-manage-serving-endpoints).
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from databricks.sdk.service.serving import EndpointTag, ServingEndpointDetailed
from typer.testing import CliRunner

from churn_example.spec import PROBLEM as CHURN
from loopback import loopback_workspace
from mlops_laptop.monitoring.cli import simulate_traffic
from mlops_laptop.monitoring.simulate import (
    VARIANT,
    Answer,
    PlannedRequest,
    TrafficError,
    answered_rows,
    error_summary,
    experiment_variants,
    plan_traffic,
    scaled_labels,
    send_traffic,
)
from mlops_template.monitoring.config import MonitoringThresholds
from mlops_template.monitoring.drift import population_stability_index
from mlops_template.monitoring.unpack import PREDICTION
from mlops_template.problem.features import DROPOFF_TIME, PICKUP_TIME
from mlops_template.problem.spec import PROBLEM as TAXI
from mlops_template.registry.versions import CHALLENGER, CHAMPION
from regression_spec import PROBLEM as BILL

ROWS = 4_000


def traffic(seed: int, classifier: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predictions and variants of answered rows: a third each champion, challenger and
    refused (no prediction, no variant)."""
    rng = np.random.default_rng(seed)
    variants = np.array([CHAMPION, CHALLENGER, None] * (ROWS // 3) + [CHALLENGER] * (ROWS % 3), dtype=object)
    if classifier:
        predictions = rng.uniform(0.0, 1.0, ROWS)
        labels = (rng.uniform(0.0, 1.0, ROWS) < predictions).astype("float64")  # calibrated
    else:
        labels = rng.normal(50.0, 10.0, ROWS)
        predictions = labels + rng.normal(0.0, 3.0, ROWS)
    predictions[variants == None] = np.nan  # noqa: E711 (elementwise)
    return labels, predictions, variants


def mae(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.abs(labels - predictions)))


def misclassified(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(labels != (predictions >= CHURN.classification_threshold)))


# --- the labels written (pure) -------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_regression_challenger_error_is_scaled_and_other_rows_keep_the_truth(scale: float) -> None:
    labels, predictions, variants = traffic(1, classifier=False)
    written = scaled_labels(labels, predictions, variants, scale, BILL, np.random.default_rng(0))
    challenger = variants == CHALLENGER
    np.testing.assert_allclose(
        np.abs(written - predictions)[challenger], scale * np.abs(labels - predictions)[challenger]
    )
    assert mae(written[challenger], predictions[challenger]) == pytest.approx(
        scale * mae(labels[challenger], predictions[challenger])
    )
    np.testing.assert_array_equal(written[~challenger], labels[~challenger])  # champion and refused


def test_a_better_classifier_challenger_gets_its_predicted_label_on_a_share_of_rows() -> None:
    labels, predictions, variants = traffic(2, classifier=True)
    written = scaled_labels(labels, predictions, variants, 0.25, CHURN, np.random.default_rng(0))
    challenger = variants == CHALLENGER
    predicted = (predictions >= CHURN.classification_threshold).astype("float64")
    changed = written != labels
    assert set(np.unique(written)) == {0.0, 1.0}
    assert not changed[~challenger].any()
    assert (written[changed] == predicted[changed]).all()  # only ever towards the prediction
    before = misclassified(labels[challenger], predictions[challenger])
    after = misclassified(written[challenger], predictions[challenger])
    assert after == pytest.approx(0.25 * before, abs=0.02)  # the wrong rows left: a share 0.25
    assert mae(written[challenger], predictions[challenger]) < mae(
        labels[challenger], predictions[challenger]
    )


@pytest.mark.parametrize(("scale", "share"), [(1.6, 0.6), (3.0, 1.0)])
def test_a_worse_classifier_challenger_gets_the_other_label_on_a_share_of_rows(
    scale: float, share: float
) -> None:
    labels, predictions, variants = traffic(3, classifier=True)
    written = scaled_labels(labels, predictions, variants, scale, CHURN, np.random.default_rng(0))
    challenger = variants == CHALLENGER
    predicted = (predictions >= CHURN.classification_threshold).astype("float64")
    changed = written != labels
    assert not changed[~challenger].any()
    assert (written[changed] != predicted[changed]).all()  # only ever away from the prediction
    before = misclassified(labels[challenger], predictions[challenger])
    after = misclassified(written[challenger], predictions[challenger])
    assert after == pytest.approx(before + share * (1 - before), abs=0.02)
    assert mae(written[challenger], predictions[challenger]) > mae(
        labels[challenger], predictions[challenger]
    )


@pytest.mark.parametrize("spec", [BILL, CHURN], ids=["regression", "classifier"])
def test_scale_one_writes_the_truth(spec) -> None:
    labels, predictions, variants = traffic(4, classifier=spec.is_classifier)
    written = scaled_labels(labels, predictions, variants, 1.0, spec, np.random.default_rng(0))
    np.testing.assert_array_equal(written, labels)


def test_the_rows_changed_are_drawn_with_the_seed() -> None:
    labels, predictions, variants = traffic(5, classifier=True)

    def written(seed: int) -> np.ndarray:
        return scaled_labels(labels, predictions, variants, 0.5, CHURN, np.random.default_rng(seed))

    np.testing.assert_array_equal(written(7), written(7))
    assert (written(7) != written(8)).any()


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_a_scale_that_is_not_above_zero_is_refused(scale: float) -> None:
    labels, predictions, variants = traffic(6, classifier=False)
    with pytest.raises(TrafficError, match="--challenger-error-scale must be a number above 0"):
        scaled_labels(labels, predictions, variants, scale, BILL, np.random.default_rng(0))


def test_the_command_refuses_a_bad_scale_before_sending_anything(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    app = typer.Typer()
    app.command()(simulate_traffic)
    result = CliRunner().invoke(app, ["-t", "dev", "--challenger-error-scale", "0"])
    assert result.exit_code == 2
    assert "--challenger-error-scale must be a number above 0" in result.output


# --- which variant answered each row -------------------------------------------------------------


def planned(row_ids: list[int], kind: str = "dataframe_records") -> PlannedRequest:
    labels = pd.DataFrame({BILL.row_id: row_ids, BILL.label: [10.0 * i for i in row_ids]})
    return PlannedRequest(kind, b"{}", labels)


def test_each_row_gets_the_ab_variant_else_the_served_entitys_variant() -> None:
    plan = [planned([1, 2]), planned([3]), planned([4, 5]), planned([6])]
    answers = [
        Answer(
            200,
            "scorer_ab-2",
            [{PREDICTION: 11.0, VARIANT: CHAMPION}, {PREDICTION: 19.0, VARIANT: CHALLENGER}],
        ),
        Answer(200, "scorer-5", [{PREDICTION: 33.0, VARIANT: None}]),
        Answer(400, "scorer-4", None),
        Answer(200, "scorer-3", [{PREDICTION: 60.0, VARIANT: None}]),
    ]
    rows = answered_rows(plan, answers, {"scorer-4": CHAMPION, "scorer-5": CHALLENGER}, BILL)
    assert rows[BILL.row_id].tolist() == [1, 2, 3, 4, 5, 6]
    assert rows[VARIANT].tolist() == [CHAMPION, CHALLENGER, CHALLENGER, None, None, "scorer-3"]
    np.testing.assert_array_equal(rows[PREDICTION], [11.0, 19.0, 33.0, np.nan, np.nan, 60.0])
    written = scaled_labels(
        rows[BILL.label], rows[PREDICTION], rows[VARIANT], 0.5, BILL, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(written, [10.0, 19.5, 31.5, 40.0, 50.0, 60.0])
    summary = error_summary(rows, written, BILL.label)
    assert "challenger: 2 rows answered, MAE 2 -> 1" in summary
    assert "champion: 1 rows answered, MAE 1 -> 1" in summary
    assert "scorer-3: 1 rows answered" in summary


def test_an_answer_with_too_few_predictions_is_an_error() -> None:
    with pytest.raises(TrafficError, match="answered 1 predictions for 2 rows"):
        answered_rows(
            [planned([1, 2])], [Answer(200, "scorer-1", [{PREDICTION: 1.0, VARIANT: None}])], {}, BILL
        )


def test_the_endpoint_tags_name_the_champion_and_challenger_entities() -> None:
    """The deploy task tags the endpoint with the model and the versions it serves (spec.endpoint_config)."""
    tags = [EndpointTag("model_name", "test.simulate.scorer"), EndpointTag("model_version", "1")]
    with pytest.raises(TrafficError, match="endpoint scores serves no challenger beside the champion"):
        experiment_variants(ServingEndpointDetailed(name="scores", tags=tags))
    canary = ServingEndpointDetailed(name="scores", tags=[*tags, EndpointTag("challenger_version", "2")])
    assert experiment_variants(canary) == {"scorer-1": CHAMPION, "scorer-2": CHALLENGER}


# --- over HTTP -----------------------------------------------------------------------------------


def answering(answers: list[tuple[int, str, dict[str, Any]]]) -> AbstractContextManager[str]:
    """A loopback endpoint giving `answers` (status, served-model-name, JSON) in turn, as a
    serving endpoint answers invocations; yields its base URL."""
    pending = list(answers)

    def answer(_method: str, _path: str, _body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        status, served, body = pending.pop(0)
        return status, body, {"served-model-name": served}

    return loopback_workspace(answer)


def test_send_traffic_keeps_each_answers_status_served_entity_and_predictions() -> None:
    answers = [
        (200, "churn-3", {"predictions": [[0.8, 0.2], [0.3, 0.7]]}),
        (200, "churn_ab-1", {"predictions": [{PREDICTION: [0.1, 0.9], VARIANT: CHALLENGER}]}),
        (400, "churn-3", {"error_code": "BAD_REQUEST", "message": "no"}),
    ]
    plan = [planned([1, 2]), planned([3]), planned([4])]
    with answering(answers) as url:
        sent = send_traffic(url, "churn", plan, CHURN)
    assert sent == [
        Answer(200, "churn-3", [{PREDICTION: 0.2, VARIANT: None}, {PREDICTION: 0.7, VARIANT: None}]),
        Answer(200, "churn_ab-1", [{PREDICTION: 0.9, VARIANT: CHALLENGER}]),
        Answer(400, "churn-3", None),
    ]


# --- what the simulator sends for the taxi example ----------------------------------------------


def taxi_rows(rows: int, seed: int) -> pd.DataFrame:
    """Held-out rows as `load_held_out` gives them for the taxi spec: the trip id, every model input
    in its type (times as pandas datetimes) and the fare."""
    rng = np.random.default_rng(seed)
    pickup = pd.Timestamp("2016-02-01") + pd.to_timedelta(rng.integers(0, 28 * 86_400, rows), unit="s")
    types = {model_input.name: model_input.type for model_input in TAXI.model_inputs}
    looked_up = {
        name: rng.integers(0, 30, rows) if types[name] == "long" else rng.uniform(1, 30, rows)
        for name in TAXI.looked_up_inputs
    }
    return pd.DataFrame(
        {
            TAXI.row_id: np.arange(rows, dtype="int64"),
            "trip_distance": rng.gamma(2.0, 1.5, rows),
            "pickup_zip": rng.integers(10001, 10100, rows),
            "dropoff_zip": rng.integers(10001, 10100, rows),
            PICKUP_TIME: pickup,
            DROPOFF_TIME: pickup + pd.to_timedelta(rng.integers(120, 3_600, rows), unit="s"),
            **looked_up,
            TAXI.label: rng.uniform(5, 60, rows),
        }
    )


def sent_records(plan: list[PlannedRequest]) -> pd.DataFrame:
    """The rows of the plan's `dataframe_records` requests, as sent."""
    records = [r for p in plan if p.kind == "dataframe_records" for r in json.loads(p.body)[p.kind]]
    return pd.DataFrame(records)


def test_the_simulator_sends_every_model_input_and_times_as_iso_text() -> None:
    """Sent features override the endpoint's lookup (docs "Override feature values in online model
    scoring": https://docs.databricks.com/aws/en/machine-learning/feature-store/automatic-feature-lookup),
    so a replay of a past period gets the features of its time, not today's online rows. MLflow reads a
    datetime input's text with `astype("datetime64[ns]")` (mlflow/models/utils.py)."""
    rows = taxi_rows(400, seed=1)
    plan = plan_traffic(rows, 120, np.random.default_rng(2), TAXI, drift=False, run_id="sim")
    sent = sent_records(plan)
    assert set(sent.columns) == {TAXI.row_id, *TAXI.input_names}
    assert sent[PICKUP_TIME].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()
    original = rows.set_index(TAXI.row_id).loc[sent[TAXI.row_id]]
    assert pd.to_datetime(sent[PICKUP_TIME]).tolist() == original[PICKUP_TIME].tolist()
    np.testing.assert_allclose(sent[TAXI.looked_up_inputs].to_numpy(float), original[TAXI.looked_up_inputs])
    assert sent["pickup_zip"].map(type).eq(int).all()  # integer zips as JSON integers


def test_drifted_taxi_traffic_is_detectable_by_the_monitored_inputs() -> None:
    """The spec's `drifted` doubles trip distances and moves pickups to the evening: the distance's
    PSI passes the default threshold; the times themselves are not monitored (not drift columns)."""
    rows = taxi_rows(2_000, seed=3)
    clean = sent_records(plan_traffic(rows, 600, np.random.default_rng(4), TAXI, drift=False, run_id="c"))
    drifted = sent_records(plan_traffic(rows, 600, np.random.default_rng(4), TAXI, drift=True, run_id="d"))
    threshold = MonitoringThresholds.defaults(TAXI).psi
    assert PICKUP_TIME not in TAXI.drift_columns and "trip_distance" in TAXI.drift_columns
    psi = population_stability_index(
        rows["trip_distance"].to_numpy(), drifted["trip_distance"].to_numpy(), 10
    )
    assert psi > threshold
    assert (
        population_stability_index(rows["trip_distance"].to_numpy(), clean["trip_distance"].to_numpy(), 10)
        < 0.1
    )
    pickup, dropoff = pd.to_datetime(drifted[PICKUP_TIME]), pd.to_datetime(drifted[DROPOFF_TIME])
    assert pickup.dt.hour.between(16, 23).all()
    original = rows.set_index(TAXI.row_id).loc[drifted[TAXI.row_id]]
    assert (
        (dropoff - pickup).to_numpy() == (original[DROPOFF_TIME] - original[PICKUP_TIME]).to_numpy()
    ).all()
