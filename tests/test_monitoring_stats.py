"""Monitoring without Spark: PSI and KS, thresholds, the retrain decision, the report, request parsing."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from mlops_template.features.columns import MODEL_INPUT_COLUMNS
from mlops_template.monitoring.check import decide
from mlops_template.monitoring.config import MonitoringThresholds, ThresholdsError
from mlops_template.monitoring.drift import ks_statistic, population_stability_index
from mlops_template.monitoring.metrics import METRICS_SCHEMA, WINDOW_LEVEL
from mlops_template.monitoring.report import format_report
from mlops_template.monitoring.simulate import (
    FORMATS,
    MALFORMED,
    TrafficError,
    check_loopback,
    malformed_body,
    plan_traffic,
    request_body,
)
from mlops_template.monitoring.tables import granularity_length
from mlops_template.monitoring.unpack import exchange_rows, parse_request, parse_response

RNG = np.random.default_rng(3)
BIG_TRIP_ID = -8793004155013582123


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


@pytest.mark.parametrize(
    "loc, scale, size", [(0.0, 1.0, 50), (0.3, 1.0, 400), (0.0, 2.0, 1_000), (2.0, 0.5, 7)]
)
def test_ks_statistic_equals_scipy(loc: float, scale: float, size: int) -> None:
    baseline, window = RNG.normal(size=2_000), RNG.normal(loc, scale, size)
    assert ks_statistic(baseline, window) == pytest.approx(ks_2samp(baseline, window).statistic, abs=1e-12)


def test_ks_equals_scipy_on_discrete_values_with_ties() -> None:
    baseline, window = RNG.integers(0, 24, 3_000).astype(float), RNG.integers(16, 24, 300).astype(float)
    assert ks_statistic(baseline, window) == pytest.approx(ks_2samp(baseline, window).statistic, abs=1e-12)


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
    thresholds = MonitoringThresholds.from_json('{"psi": 0.1, "features": ["trip_distance"]}')
    assert (thresholds.psi, thresholds.features, thresholds.ks) == (0.1, ["trip_distance"], 0.2)
    assert MonitoringThresholds.from_json("") == MonitoringThresholds()
    with pytest.raises(ThresholdsError, match="psy"):
        MonitoringThresholds.from_json('{"psy": 0.1}')
    with pytest.raises(ThresholdsError, match="not model inputs"):
        MonitoringThresholds.from_json('{"features": ["fare"]}')
    with pytest.raises(ThresholdsError, match="cannot exceed"):
        MonitoringThresholds.from_json('{"evaluation_windows": 1, "violation_windows": 2}')
    with pytest.raises(ThresholdsError, match="JSON object"):
        MonitoringThresholds.from_json("[1]")


def test_granularity_accepts_spark_window_lengths_only() -> None:
    assert granularity_length("1 hour") == dt.timedelta(hours=1)
    assert granularity_length("30 minutes") == dt.timedelta(minutes=30)
    with pytest.raises(ValueError, match="not like"):
        granularity_length("hourly")


# --- the retrain decision -------------------------------------------------------------------------


def window_metrics(start: dt.datetime, *, rows: int = 500, psi: float = 0.01, rmse: float = 2.0) -> list:
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
    values += [("psi", name, psi) for name in [*MODEL_INPUT_COLUMNS, "prediction"]]
    values += [("ks", name, psi / 2) for name in [*MODEL_INPUT_COLUMNS, "prediction"]]
    end = start + dt.timedelta(hours=1)
    return [("1 hour", start, end, metric, column, value, end) for metric, column, value in values]


def frame(*windows: list) -> pd.DataFrame:
    return pd.DataFrame([row for window in windows for row in window], columns=METRICS_SCHEMA.fieldNames())


T0 = dt.datetime(2024, 5, 1, 10)
HOUR = dt.timedelta(hours=1)


def test_clean_windows_do_not_trigger_and_a_drifted_one_does() -> None:
    clean = frame(window_metrics(T0), window_metrics(T0 + HOUR))
    assert not decide(clean, MonitoringThresholds()).retrain
    drifted = frame(window_metrics(T0), window_metrics(T0 + HOUR, psi=0.6))
    decision = decide(drifted, MonitoringThresholds())
    assert decision.retrain
    assert decision.judged_windows == [T0, T0 + HOUR]
    assert "2024-05-01 11:00: psi(trip_distance)=0.600 > 0.2" in decision.reasons
    assert "2024-05-01 11:00: ks(trip_distance)=0.300 > 0.2" in decision.reasons


def test_quality_drop_triggers_only_with_enough_labels() -> None:
    degraded = frame(window_metrics(T0, rmse=9.0))
    assert decide(degraded, MonitoringThresholds()).reasons[1] == "2024-05-01 10:00: rmse=9.00 > 5.0"
    few_labels = degraded.copy()
    few_labels.loc[few_labels["metric"] == "labeled_rows", "value"] = 3
    assert not decide(few_labels, MonitoringThresholds()).retrain


def test_small_windows_old_windows_and_the_vote_count() -> None:
    drifted = frame(window_metrics(T0, psi=0.6), window_metrics(T0 + HOUR, psi=0.6, rows=20))
    assert decide(drifted, MonitoringThresholds()).judged_windows == [T0]  # 20 rows: not judged
    during = decide(drifted, MonitoringThresholds(), not_before=T0 + dt.timedelta(minutes=30))
    assert during.retrain  # the window has traffic after the newest model version
    after_retraining = decide(drifted, MonitoringThresholds(), not_before=T0 + HOUR)
    assert not after_retraining.retrain
    assert "ending after the latest model version" in after_retraining.reasons[0]
    two_of_three = MonitoringThresholds(evaluation_windows=3, violation_windows=2)
    one_bad = frame(window_metrics(T0), window_metrics(T0 + HOUR, psi=0.6), window_metrics(T0 + 2 * HOUR))
    assert not decide(one_bad, two_of_three).retrain
    assert decide(frame(), MonitoringThresholds()).reasons == ["no drift metrics yet: no window to judge"]


def test_report_lists_windows_drifted_inputs_and_the_verdict() -> None:
    metrics = frame(window_metrics(T0), window_metrics(T0 + HOUR, psi=0.6, rmse=9.0))
    text = format_report(metrics, MonitoringThresholds(), table="c.s.x_drift_metrics", granularity="1 hour")
    lines = text.splitlines()
    assert lines[0] == "Monitoring metrics of c.s.x_drift_metrics: latest 2 windows of 1 hour"
    assert lines[3].startswith("2024-05-01 10:00      250    2.0%")
    assert lines[3].endswith("  -")
    assert "trip_distance (0.60, 0.30)" in lines[4] and "9.00" in lines[4]
    assert "Retrain by these thresholds: yes" in lines
    assert "No 1 hour windows" in format_report(
        frame(), MonitoringThresholds(), table="t", granularity="1 hour"
    )


# --- requests and responses -------------------------------------------------------------------------


def inputs(rows: int = 2) -> pd.DataFrame:
    values = {name: RNG.uniform(1, 20, rows) for name in MODEL_INPUT_COLUMNS}
    values["mean_fare_window_1h_pickup_zip"][0] = np.nan
    return pd.DataFrame({"trip_id": [BIG_TRIP_ID, *range(1, rows)], **values, "fare_amount": 10.0})


@pytest.mark.parametrize("request_format", FORMATS)
def test_each_request_format_parses_to_the_sent_rows(request_format: str) -> None:
    sent = inputs(3)
    parsed_format, frame_ = parse_request(json.dumps(request_body(sent, request_format, "c-1")))
    assert parsed_format == request_format
    rows = exchange_rows(
        {
            "databricks_request_id": "r",
            "client_request_id": "c-1",
            "request_time": T0,
            "request_date": T0.date(),
            "served_entity_id": "fare_model-2",
            "status_code": 200,
            "execution_duration_ms": 7,
            "request": json.dumps(request_body(sent, request_format, "c-1")),
            "response": json.dumps({"predictions": [11.0, 12.0, 13.0]}),
        }
    )
    assert [row["trip_id"] for row in rows] == sent["trip_id"].tolist()
    assert [row["row_index"] for row in rows] == [0, 1, 2]
    assert [row["prediction"] for row in rows] == [11.0, 12.0, 13.0]
    assert rows[0]["mean_fare_window_1h_pickup_zip"] is None
    assert rows[1]["trip_distance"] == pytest.approx(sent["trip_distance"][1])
    assert len(frame_) == 3


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


def test_planned_traffic_mixes_formats_some_malformed_and_keeps_actual_fares() -> None:
    trips = inputs(400)
    plan = plan_traffic(trips, 200, np.random.default_rng(1), drift=True, run_id="sim")
    kinds = {planned.kind for planned in plan}
    assert set(FORMATS) <= kinds
    assert any(kind.startswith("malformed:") for kind in kinds)
    fares = pd.concat([planned.fares for planned in plan])
    assert set(fares["fare_amount"]) == {10.0}
    first = next(p for p in plan if p.kind == "dataframe_records")
    record = json.loads(first.body)["dataframe_records"][0]
    original = trips.set_index("trip_id").loc[record["trip_id"]]
    assert record["trip_distance"] == pytest.approx(2 * original["trip_distance"])
    assert 16 <= record["pickup_hour"] <= 23
    for how in MALFORMED:
        assert malformed_body(trips.head(2), how, "c")
