"""Monitoring without Spark: PSI and KS, thresholds, window quality, the retrain decision, the report,
request parsing, for the churn classification spec and its regression flavour (tests/regression_spec.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from churn_example.spec import PROBLEM as CHURN
from mlops_laptop.monitoring.simulate import (
    FORMATS,
    MALFORMED,
    TrafficError,
    check_loopback,
    malformed_body,
    plan_traffic,
    request_body,
)
from mlops_template.monitoring.check import decide
from mlops_template.monitoring.config import MonitoringThresholds, ThresholdsError
from mlops_template.monitoring.drift import categorical_psi, ks_statistic, population_stability_index
from mlops_template.monitoring.metrics import METRICS_SCHEMA, WINDOW_LEVEL, drift_rows, quality
from mlops_template.monitoring.report import format_report
from mlops_template.monitoring.tables import granularity_length
from mlops_template.monitoring.unpack import ServedColumns, exchange_rows, parse_request, parse_response
from mlops_template.problem_spec import ModelInput
from regression_spec import PROBLEM as BILL

RNG = np.random.default_rng(3)
BIG_ROW_ID = -8793004155013582123


# --- PSI and KS ---------------------------------------------------------------------------------


def test_identical_distributions_have_psi_and_ks_near_zero() -> None:
    baseline, same = RNG.normal(size=5_000), RNG.normal(size=5_000)
    assert population_stability_index(baseline, baseline) == pytest.approx(0.0, abs=1e-9)
    assert ks_statistic(baseline, baseline) == 0.0
    assert population_stability_index(baseline, same) < 0.02
    assert ks_statistic(baseline, same) < 0.04


def test_a_shifted_normal_has_large_psi_and_ks() -> None:
    baseline, shifted = RNG.normal(size=5_000), RNG.normal(loc=1.0, size=2_000)
    assert population_stability_index(baseline, shifted) > 0.5
    assert ks_statistic(baseline, shifted) > 0.3


def test_ks_is_scipys_statistic_over_the_values_present() -> None:
    baseline, window = RNG.normal(size=2_000), RNG.normal(0.3, 1.0, 400)
    with_gaps = np.where(RNG.random(400) < 0.2, np.nan, window)
    expected = ks_2samp(baseline, with_gaps[~np.isnan(with_gaps)]).statistic
    assert ks_statistic(baseline, with_gaps) == pytest.approx(expected, abs=1e-12)


def test_psi_of_a_string_input_counts_its_values_unseen_ones_and_missing_ones() -> None:
    plans = pd.Series(RNG.choice(["basic", "standard", "premium"], 3_000, p=[0.5, 0.3, 0.2]))
    same = pd.Series(RNG.choice(["basic", "standard", "premium"], 1_000, p=[0.5, 0.3, 0.2]))
    assert categorical_psi(plans, same) < 0.01
    assert categorical_psi(plans, pd.Series(["premium"] * 900 + ["basic"] * 100)) > 1.0
    assert categorical_psi(plans, pd.Series(["gold"] * 500 + ["basic"] * 500)) > 1.0  # unseen value
    assert categorical_psi(plans, pd.Series([None] * 500 + ["basic"] * 500)) > 1.0  # missing
    assert np.isnan(categorical_psi(pd.Series([], dtype=object), same))


def test_psi_of_a_binary_feature_and_of_missing_values() -> None:
    baseline = (RNG.random(4_000) < 0.3).astype(float)
    assert population_stability_index(baseline, (RNG.random(1_000) < 0.3).astype(float)) < 0.01
    assert population_stability_index(baseline, (RNG.random(1_000) < 0.8).astype(float)) > 0.5
    with_gaps = np.where(RNG.random(1_000) < 0.5, np.nan, RNG.normal(size=1_000))
    assert population_stability_index(RNG.normal(size=4_000), with_gaps) > 1.0  # half missing: drift
    assert np.isnan(ks_statistic(np.array([np.nan]), RNG.normal(size=10)))
    assert np.isnan(population_stability_index(np.array([]), RNG.normal(size=10)))


# --- thresholds -----------------------------------------------------------------------------------


def test_thresholds_from_json_override_defaults_and_name_bad_keys() -> None:
    thresholds = MonitoringThresholds.from_json('{"psi": 0.1, "features": ["minutes"]}', BILL)
    assert (thresholds.psi, thresholds.features, thresholds.ks) == (0.1, ["minutes"], 0.2)
    assert MonitoringThresholds.from_json("", BILL) == MonitoringThresholds.defaults(BILL)
    with pytest.raises(ThresholdsError, match="psy"):
        MonitoringThresholds.from_json('{"psy": 0.1}', BILL)
    with pytest.raises(ThresholdsError, match="not monitored inputs"):
        MonitoringThresholds.from_json('{"features": ["bill"]}', BILL)
    with pytest.raises(ThresholdsError, match="cannot exceed"):
        MonitoringThresholds.from_json('{"evaluation_windows": 1, "violation_windows": 2}', BILL)
    with pytest.raises(ThresholdsError, match="JSON object"):
        MonitoringThresholds.from_json("[1]", BILL)


def test_quality_thresholds_default_to_the_spec_and_are_named_apart_from_the_gate() -> None:
    """`max_rmse` is the gate's (held-out rows, before promotion); monitoring's is `quality_max_rmse`."""
    assert MonitoringThresholds.defaults(BILL).quality == dict(BILL.quality_thresholds)
    assert MonitoringThresholds.defaults(BILL).features == BILL.drift_columns
    overridden = MonitoringThresholds.from_json('{"quality_max_rmse": 3.5, "quality_min_r2": 0.5}', BILL)
    assert overridden.quality == {"max_rmse": 3.5, "min_r2": 0.5}
    logged = overridden.model_dump()
    assert MonitoringThresholds.model_validate(logged, context={"spec": BILL}) == overridden
    with pytest.raises(ThresholdsError, match="max_rmse names a gate threshold: .* is quality_max_rmse"):
        MonitoringThresholds.from_json('{"max_rmse": 3.5}', BILL)  # the gate's name: not a setting here
    with pytest.raises(ThresholdsError, match=r"quality_max_log_loss is not one of \['quality_min_rmse'"):
        MonitoringThresholds.from_json('{"quality_max_log_loss": 0.5}', BILL)
    churn = MonitoringThresholds.from_json('{"quality_min_roc_auc": 0.7, "features": ["plan"]}', CHURN)
    assert (churn.quality, churn.features) == ({"min_roc_auc": 0.7}, ["plan"])


def test_granularity_accepts_spark_window_lengths_only() -> None:
    assert granularity_length("1 hour") == dt.timedelta(hours=1)
    assert granularity_length("30 minutes") == dt.timedelta(minutes=30)
    with pytest.raises(ValueError, match="not like"):
        granularity_length("hourly")


# --- quality and drift of a window ----------------------------------------------------------------


def test_a_classification_window_gets_log_loss_brier_accuracy_and_roc_auc() -> None:
    labels = pd.Series([1, 0, 1, 1, 0, 0], dtype="float64")  # as the monitoring table holds them
    probabilities = pd.Series([0.9, 0.2, 0.6, 0.4, 0.3, 0.7])
    values = quality(CHURN, labels, probabilities)
    assert list(values) == ["roc_auc", "log_loss", "brier", "accuracy"]
    assert values["accuracy"] == pytest.approx(4 / 6)  # 0.4 and 0.7 fall on the wrong side of 0.5
    assert values["brier"] == pytest.approx(np.mean((probabilities - labels) ** 2))
    expected_log_loss = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    assert values["log_loss"] == pytest.approx(expected_log_loss)
    assert values["roc_auc"] == pytest.approx(7 / 9)  # of the 9 (churned, stayed) pairs, 7 ranked right
    one_class = quality(CHURN, pd.Series([1.0, 1.0]), pd.Series([0.8, 0.4]))
    assert np.isnan(one_class["roc_auc"]) and one_class["accuracy"] == 0.5  # the rest still judged
    assert all(np.isnan(v) for v in quality(CHURN, pd.Series([], dtype=float), pd.Series([])).values())


def test_a_regression_window_gets_rmse_mae_and_r2() -> None:
    values = quality(BILL, pd.Series([10.0, 20.0, 30.0]), pd.Series([12.0, 18.0, 30.0]))
    assert values["rmse"] == pytest.approx(np.sqrt(8 / 3))
    assert values["mae"] == pytest.approx(4 / 3)
    assert set(values) == {"rmse", "mae", "r2"}


def test_prediction_drift_compares_probabilities_with_the_champions_not_with_labels() -> None:
    """A healthy classifier's probabilities are nothing like 0 / 1 labels: compared with the
    baseline's labels they would raise a drift alarm (and a retrain) on every window."""
    inputs = {name: RNG.normal(size=4_000) for name in CHURN.drift_columns if name != "plan"}
    scores = RNG.normal(size=4_000)
    champion = 1 / (1 + np.exp(-scores))
    baseline = pd.DataFrame(
        {"plan": RNG.choice(["basic", "premium"], 4_000), **inputs, "churned": RNG.random(4_000) < champion}
    ).assign(prediction=champion)
    served = baseline.sample(800, random_state=1).assign(prediction=lambda f: f["prediction"] + 0.01)
    rows = {(metric, column): value for metric, column, value in drift_rows(served, baseline, CHURN, 10)}
    limit = MonitoringThresholds.defaults(CHURN).prediction_psi
    assert rows[("psi", "prediction")] < 0.05 < limit
    against_labels = population_stability_index(baseline["churned"].to_numpy(float), served["prediction"])
    assert against_labels > limit  # what comparing with labels would have reported
    assert rows[("psi", "plan")] < 0.05 and np.isnan(rows[("ks", "plan")])  # a string input: PSI only


# --- the retrain decision -------------------------------------------------------------------------


def window_metrics(
    start: dt.datetime, *, rows: int = 500, psi: float = 0.01, rmse: float = 2.0, spec=BILL
) -> list:
    """The stored metric rows of one window: every input with `psi` (KS = psi / 2)."""
    level = {
        "requests": rows / 2,
        "error_rate": 0.02,
        "rows": rows,
        "labeled_rows": rows,
        "rmse": rmse,
        "mae": 1.5,
    }
    values = [(name, WINDOW_LEVEL, value) for name, value in level.items()]
    values += [("psi", name, psi) for name in [*spec.drift_columns, "prediction"]]
    values += [("ks", name, psi / 2) for name in [*spec.drift_columns, "prediction"]]
    end = start + dt.timedelta(hours=1)
    return [("1 hour", start, end, metric, column, value, end) for metric, column, value in values]


def frame(*windows: list) -> pd.DataFrame:
    return pd.DataFrame([row for window in windows for row in window], columns=METRICS_SCHEMA.fieldNames())


T0 = dt.datetime(2024, 5, 1, 10)
HOUR = dt.timedelta(hours=1)
DEFAULTS = MonitoringThresholds.defaults(BILL)


def test_clean_windows_do_not_trigger_and_a_drifted_one_does() -> None:
    clean = frame(window_metrics(T0), window_metrics(T0 + HOUR))
    assert not decide(clean, DEFAULTS).retrain
    drifted = frame(window_metrics(T0), window_metrics(T0 + HOUR, psi=0.6))
    decision = decide(drifted, DEFAULTS)
    assert decision.retrain
    assert decision.judged_windows == [T0, T0 + HOUR]
    assert "2024-05-01 11:00: psi(minutes)=0.600 > 0.2" in decision.reasons
    assert "2024-05-01 11:00: ks(minutes)=0.300 > 0.2" in decision.reasons


def test_quality_drop_triggers_only_with_enough_labels() -> None:
    degraded = frame(window_metrics(T0, rmse=9.0))
    assert decide(degraded, DEFAULTS).reasons[1] == "2024-05-01 10:00: rmse=9.000 > 5.0"
    few_labels = degraded.copy()
    few_labels.loc[few_labels["metric"] == "labeled_rows", "value"] = 3
    assert not decide(few_labels, DEFAULTS).retrain


def test_classification_quality_limits_judge_each_metric_in_its_direction() -> None:
    window = window_metrics(T0, spec=CHURN)
    window += [
        ("1 hour", T0, T0 + HOUR, name, WINDOW_LEVEL, v, T0)
        for name, v in (("roc_auc", 0.55), ("brier", 0.1))
    ]
    thresholds = MonitoringThresholds.from_json(
        '{"quality_min_roc_auc": 0.6, "quality_max_brier": 0.2}', CHURN
    )
    assert decide(frame(window), thresholds).reasons[1:] == ["2024-05-01 10:00: roc_auc=0.550 < 0.6"]
    healthy = MonitoringThresholds.from_json('{"quality_min_roc_auc": 0.5}', CHURN)
    assert not decide(frame(window), healthy).retrain


def test_small_windows_old_windows_and_the_vote_count() -> None:
    drifted = frame(window_metrics(T0, psi=0.6), window_metrics(T0 + HOUR, psi=0.6, rows=20))
    assert decide(drifted, DEFAULTS).judged_windows == [T0]  # 20 rows: not judged
    during = decide(drifted, DEFAULTS, not_before=T0 + dt.timedelta(minutes=30))
    assert during.retrain  # the window has traffic after the newest model version
    after_retraining = decide(drifted, DEFAULTS, not_before=T0 + HOUR)
    assert not after_retraining.retrain
    assert "ending after the latest model version" in after_retraining.reasons[0]
    two_of_three = DEFAULTS.model_copy(update={"evaluation_windows": 3, "violation_windows": 2})
    one_bad = frame(window_metrics(T0), window_metrics(T0 + HOUR, psi=0.6), window_metrics(T0 + 2 * HOUR))
    assert not decide(one_bad, two_of_three).retrain
    assert decide(frame(), DEFAULTS).reasons == ["no drift metrics yet: no window to judge"]


def test_report_lists_windows_the_task_types_metrics_drifted_inputs_and_the_verdict() -> None:
    metrics = frame(window_metrics(T0), window_metrics(T0 + HOUR, psi=0.6, rmse=9.0))
    text = format_report(metrics, DEFAULTS, BILL, table="c.s.x_drift_metrics", granularity="1 hour")
    lines = text.splitlines()
    assert lines[0] == "Monitoring metrics of c.s.x_drift_metrics: latest 2 windows of 1 hour"
    assert lines[2].split()[8:11] == ["rmse", "mae", "r2"]
    assert lines[3].startswith("2024-05-01 10:00      250    2.0%")
    assert lines[3].endswith("  -")
    assert "minutes (0.60, 0.30)" in lines[4] and "9.000" in lines[4]
    assert "Retrain by these thresholds: yes" in lines
    assert "No 1 hour windows" in format_report(frame(), DEFAULTS, BILL, table="t", granularity="1 hour")
    churn_thresholds = MonitoringThresholds.defaults(CHURN)
    churn = format_report(
        frame(window_metrics(T0, spec=CHURN)), churn_thresholds, CHURN, table="t", granularity="1 hour"
    )
    assert churn.splitlines()[2].split()[8:12] == ["roc_auc", "log_loss", "brier", "accuracy"]


# --- requests and responses -------------------------------------------------------------------------


def _values(model_input: ModelInput, rows: int) -> np.ndarray | pd.Series:
    """Random values of one input's type: plans, customer ids, times (to the microsecond), numbers."""
    if model_input.type == "string":
        return RNG.choice(["basic", "premium"], rows)
    if model_input.type in ("long", "integer"):
        return pd.array(RNG.integers(1, 300, rows), dtype="Int64")  # nullable: one may be missing
    if model_input.type == "datetime":
        return pd.Series(T0 + pd.to_timedelta(RNG.integers(0, 10**12, rows), unit="us"))
    return RNG.uniform(1, 20, rows)


def inputs(rows: int = 2, spec=BILL) -> pd.DataFrame:
    """Rows to send: the row id (the first a big int64), the inputs, the label; one input missing."""
    values = {i.name: _values(i, rows) for i in spec.model_inputs}
    last = spec.input_names[-1]
    values[last][0] = None if spec.model_inputs[-1].type == "string" else np.nan
    return pd.DataFrame({spec.row_id: [BIG_ROW_ID, *range(1, rows)], **values, spec.label: 1.0})


def exchange(body: dict, response: dict) -> dict:
    return {
        "databricks_request_id": "r",
        "client_request_id": "c-1",
        "request_time": T0,
        "request_date": T0.date(),
        "served_entity_id": "entity-2",
        "status_code": 200,
        "execution_duration_ms": 7,
        "request": json.dumps(body),
        "response": json.dumps(response),
    }


@pytest.mark.parametrize("request_format", FORMATS)
def test_each_request_format_parses_to_the_sent_rows(request_format: str) -> None:
    sent = inputs(3)
    body = request_body(sent, request_format, "c-1", BILL)
    parsed_format, frame_ = parse_request(json.dumps(body))
    assert parsed_format == request_format
    rows = exchange_rows(exchange(body, {"predictions": [11.0, 12.0, 13.0]}), ServedColumns.of(BILL))
    assert [row["event_id"] for row in rows] == [str(i) for i in sent["event_id"]]  # exact, as text
    assert [row["row_index"] for row in rows] == [0, 1, 2]
    assert [row["prediction"] for row in rows] == [11.0, 12.0, 13.0]
    assert rows[0][BILL.input_names[-1]] is None
    assert rows[1]["minutes"] == pytest.approx(sent["minutes"][1])
    assert rows[1]["plan"] == sent["plan"][1]  # a string input stays text
    assert [row["event_ts"] for row in rows] == sent["event_ts"].tolist()  # ISO text -> the same time
    assert [row["customer_id"] for row in rows] == sent["customer_id"].tolist()
    assert len(frame_) == 3


@pytest.mark.parametrize("request_format", FORMATS)
def test_string_inputs_and_class_probabilities_survive_unpacking(request_format: str) -> None:
    """A classifier served with predict_proba answers one probability per class; `prediction` is
    that of label 1, and a string input keeps its text."""
    sent = inputs(3, CHURN)
    body = request_body(sent, request_format, "c-1", CHURN)
    answer = {"predictions": [[0.9, 0.1], [0.25, 0.75], [0.5, 0.5]]}
    rows = exchange_rows(exchange(body, answer), ServedColumns.of(CHURN))
    assert [row["plan"] for row in rows] == sent["plan"].tolist()
    assert [type(row["plan"]) for row in rows] == [str] * 3
    assert rows[0]["mean_minutes_7d"] is None
    assert [row["prediction"] for row in rows] == [0.1, 0.75, 0.5]
    assert [row["event_id"] for row in rows] == [str(i) for i in sent["event_id"]]
    assert rows[1]["minutes"] == pytest.approx(sent["minutes"][1])


def test_classifier_answers_in_every_shape_give_the_probability_of_label_1() -> None:
    def probabilities(response: str) -> list:
        return [row["prediction"] for row in parse_response(response, classifier=True)[0]]

    assert probabilities('{"predictions": [[0.8, 0.2], [0.3, 0.7]]}') == [0.2, 0.7]  # numpy output
    assert probabilities('{"predictions": [{"0": 0.8, "1": 0.2}]}') == [0.2]  # a DataFrame's records
    assert probabilities('{"predictions": {"0": [0.8, 0.4], "1": [0.2, 0.6]}}') == [0.2, 0.6]  # columnar
    assert probabilities('{"predictions": [0.35, [0.65]]}') == [0.35, 0.65]  # one probability per row
    ab = parse_response('{"predictions": [{"prediction": [0.1, 0.9], "variant": "challenger"}]}', True)
    assert ab == ([{"prediction": 0.9, "variant": "challenger"}], None)
    assert probabilities('{"predictions": [[0.2, 0.3, 0.5], 1.7, "x"]}') == [None, None, None]


def test_unreadable_requests_and_responses_never_raise() -> None:
    assert parse_request(None) == (None, None)
    assert parse_request("{not json") == (None, None)
    assert parse_request('{"data": []}') == (None, None)
    assert parse_request('{"instances": [[1, 2], [3, 4]]}')[1] is None  # positional: no column names
    assert parse_request('{"dataframe_split": {"rows": 1}}') == ("dataframe_split", None)
    assert parse_response('{"error_code": "BAD_REQUEST", "message": "m"}') == (None, "BAD_REQUEST")
    ab = parse_response('{"predictions": [{"prediction": 9.5, "variant": "challenger"}]}')
    assert ab == ([{"prediction": 9.5, "variant": "challenger"}], None)
    columnar = parse_response('{"predictions": {"prediction": [1.0, 2.0], "variant": ["champion", "x"]}}')
    assert [row["prediction"] for row in columnar[0]] == [1.0, 2.0]
    assert parse_response('{"predictions": {"prediction": [1.0], "variant": []}}') == (None, None)
    assert parse_response('{"predictions": [[3.0], "x"]}')[0] == [
        {"prediction": 3.0, "variant": None},
        {"prediction": None, "variant": None},
    ]


def lookup_record(columns: list[str], data: list[list], defaulted: list[list[str]] | None) -> dict:
    """The endpoint's record of its feature lookup in the logged response (the local endpoint's shape;
    Databricks saves the augmented DataFrame to the inference table only with ENABLE_FEATURE_TRACING=true:
    https://docs.databricks.com/aws/en/machine-learning/feature-store/automatic-feature-lookup)."""
    record = {"columns": columns, "data": data} | ({"defaulted": defaulted} if defaulted is not None else {})
    return {"databricks_output": {"feature_lookup": record}}


def test_each_input_comes_from_the_request_else_from_the_lookup_the_endpoint_logged() -> None:
    """A non-null sent value wins over the lookup, as on Databricks (docs "Override feature values in
    online model scoring": https://docs.databricks.com/aws/en/machine-learning/feature-store/automatic-feature-lookup;
    training side: `join_feature_data_if_not_overridden` in databricks/ml_features/entities/
    training_set.py). Sent values are never listed as defaulted."""
    sent = inputs(3, BILL).assign(events_7d=[np.nan, 5.0, 4.0], mean_minutes_7d=[np.nan, np.nan, 6.5])
    body = request_body(sent, "dataframe_records", "c-1", BILL)
    traced = lookup_record(
        ["events_7d", "mean_minutes_7d"],
        [[3.0, 12.5], [0.0, None], [2.0, 7.0]],
        [[], ["events_7d", "mean_minutes_7d"], []],
    )
    rows = exchange_rows(exchange(body, {"predictions": [1.0, 2.0, 3.0]} | traced), ServedColumns.of(BILL))
    assert [(row["events_7d"], row["mean_minutes_7d"]) for row in rows] == [
        (3.0, 12.5),
        (5.0, None),
        (4.0, 6.5),
    ]
    assert [row["feature_source"] for row in rows] == ["online", "online", "request"]
    assert [row["defaulted_features"] for row in rows] == [[], ["mean_minutes_7d"], []]
    assert rows[0]["minutes"] == pytest.approx(sent["minutes"][0])  # request inputs as sent


def test_rows_whose_features_are_neither_sent_nor_logged_are_left_to_the_offline_lookup() -> None:
    sent = inputs(2, BILL).assign(events_7d=np.nan)
    body = request_body(sent, "inputs", "c-1", BILL)
    columns = ServedColumns.of(BILL)
    untraced = exchange_rows(exchange(body, {"predictions": [1.0, 2.0]}), columns)
    assert [(row["feature_source"], row["defaulted_features"]) for row in untraced] == [("offline", None)] * 2
    short = lookup_record(["events_7d"], [[1.0]], [[]])  # one row logged for two: which is whose?
    mismatched = exchange_rows(exchange(body, {"predictions": [1.0, 2.0]} | short), columns)
    assert [row["feature_source"] for row in mismatched] == ["offline", "offline"]
    unlisted = lookup_record(["events_7d", "mean_minutes_7d"], [[1.0, 2.0], [3.0, 4.0]], None)
    rows = exchange_rows(exchange(body, {"predictions": [1.0, 2.0]} | unlisted), columns)
    assert [(row["events_7d"], row["defaulted_features"]) for row in rows] == [(1.0, None), (3.0, None)]
    every = request_body(inputs(2, BILL).assign(mean_minutes_7d=[1.0, 2.0]), "inputs", "c", BILL)
    complete = exchange_rows(exchange(every, {"predictions": [1.0, 2.0]}), columns)
    assert [(row["feature_source"], row["defaulted_features"]) for row in complete] == [("request", [])] * 2


def test_datetime_inputs_are_read_from_iso_text_as_naive_utc() -> None:
    """MLflow converts a datetime input's text with `astype("datetime64[ns]")` and refuses an offset
    (mlflow/models/utils.py `_enforce_mlflow_datatype`); a time with an offset is read in UTC here."""
    records = [
        {"event_ts": "2024-05-01T10:07:00.123456"},
        {"event_ts": "2024-05-01 12:07:00+02:00"},
        {"event_ts": "soon"},
        {"event_ts": 1714558020},
        {"event_ts": None},
    ]
    body = {"dataframe_records": [r | {"event_id": i, "customer_id": 3} for i, r in enumerate(records)]}
    rows = exchange_rows(exchange(body, {"predictions": [1.0] * 5}), ServedColumns.of(BILL))
    assert [row["event_ts"] for row in rows] == [
        pd.Timestamp("2024-05-01 10:07:00.123456"),
        pd.Timestamp("2024-05-01 10:07:00"),
        None,
        None,
        None,
    ]
    assert rows[0]["event_ts"].tzinfo is None


# --- the traffic simulator's requests ----------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9/", "http://[::1]:8080"])
def test_loopback_urls_are_accepted(url: str) -> None:
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8080", "http://example.com", "https://127.0.0.1", "127.0.0.1:80"]
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(TrafficError):
        check_loopback(url)


def test_planned_traffic_mixes_formats_some_malformed_and_keeps_the_labels() -> None:
    rows = inputs(400)
    plan = plan_traffic(rows, 200, np.random.default_rng(1), BILL, drift=True, run_id="sim")
    kinds = {planned.kind for planned in plan}
    assert set(FORMATS) <= kinds
    assert any(kind.startswith("malformed:") for kind in kinds)
    labels = pd.concat([planned.labels for planned in plan])
    assert list(labels.columns) == ["event_id", "bill"] and set(labels["bill"]) == {1.0}
    first = next(p for p in plan if p.kind == "dataframe_records")
    record = json.loads(first.body)["dataframe_records"][0]
    original = rows.set_index("event_id").loc[record["event_id"]]
    assert record["minutes"] == pytest.approx(2 * original["minutes"])  # the spec's drift
    assert record["support_tickets"] == pytest.approx(original["support_tickets"] + 3)
    for how in MALFORMED:
        assert malformed_body(rows.head(2), how, "c", BILL)


def test_malformed_requests_are_built_from_the_spec_inputs() -> None:
    """A text where the first numeric input is expected, a missing request input: for any spec. A
    looked-up input left out is no mistake: a model logged with its feature lookups takes them as
    optional inputs (databricks/ml_features/utils/signature_utils.py marks features optional)."""
    features_first = dataclasses.replace(
        CHURN,
        model_inputs=tuple(sorted(CHURN.model_inputs, key=lambda i: i.name not in CHURN.looked_up_inputs)),
    )
    rows = inputs(2, features_first)
    bad = json.loads(malformed_body(rows, "bad_value", "c", CHURN))["dataframe_records"]
    assert {record["customer_id"] for record in bad} == {"not a number"}  # not the time, not the text
    missing = json.loads(malformed_body(rows, "missing_input", "c", features_first))["dataframe_records"]
    assert all("customer_id" not in record and "events_7d" in record for record in missing)
    with pytest.raises(TrafficError, match="no drift_inputs"):
        plan_traffic(rows, 5, np.random.default_rng(1), CHURN, drift=True, run_id="sim")
