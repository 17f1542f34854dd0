"""The live experiment per variant on real local Spark and SciPy: rows of a monitoring table (the
regression flavour of churn, tests/regression_spec.py) assigned to champion or challenger, service
and prediction metrics, RMSE / MAE with bootstrap intervals, and the rollout decision.

Databricks' `system.serving.served_entities` names each served entity's `entity_name` and
`entity_version` (https://docs.databricks.com/aws/en/admin/system-tables/serving): a row's
(entity name, version) says which model answered, its version alone does not (the A/B model is
another registered model with its own version numbers).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import types as T
from sklearn.metrics import brier_score_loss

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.monitoring.rollout import (
    Interval,
    RolloutAnalysis,
    RolloutParams,
    RolloutParamsError,
    VariantMetrics,
    analyse,
    analyse_rows,
    bootstrap_interval,
    decide,
    error_intervals,
    served_entity_names,
)
from mlops_template.monitoring.unpack import MODEL_VERSION, ServedColumns, monitoring_columns
from mlops_template.registry.experiment import Experiment
from mlops_template.serving.served_entities import SERVED_ENTITIES_DDL, SERVED_ENTITIES_TABLE
from mlops_template.serving.spec import ab_model_name
from regression_spec import PROBLEM as BILL

T0 = dt.datetime(2024, 6, 1, 8, 0, tzinfo=dt.UTC)
PARAMS = RolloutParams(min_labelled=100, min_duration_hours=1, bootstrap_resamples=1000, seed=3)


# ----------------------------------------------------------------------------------------------
# Helpers: a monitoring table and the served entities it names (also used by test_rollout_job)


def record_entities(platform: LocalPlatform, entities: dict[str, tuple[str, int]]) -> None:
    """Append served entities (id -> entity name, version) to the local served-entities table."""
    rows = [
        (
            entity_id,
            "rollout-endpoint",
            f"{name.split('.')[-1]}-{version}",
            "CUSTOM_MODEL",
            name,
            str(version),
            T0,
        )
        for entity_id, (name, version) in entities.items()
    ]
    platform.save_table(
        platform.spark.createDataFrame(rows, schema=SERVED_ENTITIES_DDL), SERVED_ENTITIES_TABLE, mode="append"
    )


def traffic(
    entity_id: str,
    count: int,
    *,
    error_sd: float,
    seed: int,
    start: dt.datetime = T0,
    variant: str | None = None,
    failed_every: int = 0,
    failed_status: int = 500,
    latency_ms: int = 20,
    labelled_share: float = 1.0,
) -> list[dict[str, Any]]:
    """`count` one-row requests to a served entity: predictions = truth + N(0, error_sd), a label on
    the first `labelled_share` of them, every `failed_every`-th answered `failed_status`."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(10, 60, count)
    predictions = truth + rng.normal(0.0, error_sd, count)
    rows = []
    for index in range(count):
        failed = failed_every and index % failed_every == 0
        rows.append(
            {
                "databricks_request_id": f"{entity_id}-{seed}-{index}",
                "row_index": 0,
                "request_time": start + dt.timedelta(seconds=index),
                "request_date": start.date(),
                "served_entity_id": entity_id,
                "status_code": failed_status if failed else 200,
                "execution_duration_ms": latency_ms + index % 10,
                "variant": None if failed else variant,
                "prediction": None if failed else float(predictions[index]),
                BILL.label: float(truth[index]) if index < labelled_share * count else None,
            }
        )
    return rows


def monitoring_frame(platform: LocalPlatform, rows: list[dict[str, Any]]) -> DataFrame:
    """Rows with the monitoring table's columns and types for the regression spec."""
    fields = {field.name: field for field in ServedColumns.of(BILL).unpacked_schema().fields}
    fields[MODEL_VERSION] = T.StructField(MODEL_VERSION, T.StringType())
    fields[BILL.label] = T.StructField(BILL.label, T.DoubleType())
    schema = T.StructType([fields[name] for name in monitoring_columns(BILL)])
    values = [tuple(row.get(name) for name in schema.fieldNames()) for row in rows]
    return platform.spark.createDataFrame(values, schema)


def write_monitoring(platform: LocalPlatform, table: str, rows: list[dict[str, Any]]) -> None:
    platform.save_table(monitoring_frame(platform, rows), table)


def entity_ids() -> dict[str, str]:
    return {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("champion", "challenger", "ab", "other")}


# ----------------------------------------------------------------------------------------------
# Variants and metrics on Spark


@pytest.fixture
def model() -> str:
    return f"test.rollout.m_{uuid.uuid4().hex[:8]}"


def test_rows_are_assigned_by_the_ab_variant_else_by_served_entity_name_and_version(platform, model):
    """The A/B model's version 2 is not the base model's challenger version 2: its rows count by
    their `variant`, its refused requests (no variant) and another model's rows for neither."""
    ids = entity_ids()
    record_entities(
        platform,
        {
            ids["champion"]: (model, 1),
            ids["challenger"]: (model, 2),
            ids["ab"]: (ab_model_name(model), 2),
            ids["other"]: ("test.rollout.other_model", 2),
        },
    )
    started = T0 + dt.timedelta(minutes=10)
    rows = [
        *traffic(ids["champion"], 30, error_sd=1, seed=1, start=started),
        *traffic(ids["challenger"], 20, error_sd=1, seed=2, start=started),
        *traffic(ids["ab"], 12, error_sd=1, seed=3, start=started, variant="champion", failed_every=4),
        *traffic(ids["ab"], 7, error_sd=1, seed=4, start=started, variant="challenger"),
        *traffic(ids["other"], 5, error_sd=1, seed=5, start=started),
        *traffic("not-recorded-yet", 4, error_sd=1, seed=6, start=started),
        *traffic(ids["challenger"], 50, error_sd=1, seed=7, start=T0),  # before the experiment began
    ]
    table = f"test.rollout.t_{uuid.uuid4().hex[:8]}"
    write_monitoring(platform, table, rows)
    experiment = Experiment(model, champion=1, challenger=2, started_at=started)

    analysis = analyse(platform, table, experiment, BILL.label, PARAMS, started + dt.timedelta(hours=1))

    champion, challenger = analysis.champion, analysis.challenger
    assert (champion.requests, challenger.requests) == (30 + 9, 20 + 7)  # refused A/B requests: no variant
    assert (champion.predictions, challenger.predictions) == (39, 27)
    assert (champion.errors, challenger.errors) == (0, 0)
    assert analysis.unassigned_rows == 3 + 5 + 4
    assert (champion.version, challenger.version) == (1, 2)


def test_without_the_served_entities_only_ab_rows_are_assigned(platform, model):
    ids = entity_ids()
    rows = [
        *traffic(ids["challenger"], 10, error_sd=1, seed=1),
        *traffic(ids["ab"], 6, error_sd=1, seed=2, variant="challenger"),
    ]
    experiment = Experiment(model, champion=1, challenger=2, started_at=T0)

    analysis = analyse_rows(monitoring_frame(platform, rows), None, experiment, BILL.label, PARAMS, T0)

    assert (analysis.champion.requests, analysis.challenger.requests) == (0, 6)
    assert analysis.unassigned_rows == 10


def test_client_mistakes_are_not_the_challengers_failures(platform, model):
    """A 4xx is the client's mistake (a malformed request), refused by either variant alike: only
    the server's faults (5xx) count against the service limit."""
    ids = entity_ids()
    record_entities(platform, {ids["champion"]: (model, 4), ids["challenger"]: (model, 5)})
    rows = [
        *traffic(ids["champion"], 200, error_sd=1.0, seed=21, failed_every=10, failed_status=400),
        *traffic(ids["challenger"], 200, error_sd=1.0, seed=22, failed_every=10, failed_status=400),
    ]
    experiment = Experiment(model, champion=4, challenger=5, started_at=T0)
    entities = served_entity_names(platform)
    analysis = analyse_rows(monitoring_frame(platform, rows), entities, experiment, BILL.label, PARAMS, T0)
    assert (analysis.challenger.requests, analysis.challenger.errors) == (200, 0)
    assert "failed" not in decide(analysis, PARAMS, T0 + dt.timedelta(hours=2)).reason


def test_per_variant_service_predictions_and_errors_with_intervals_that_cover_the_truth(platform, model):
    """Seeded errors N(0, 2) for the champion and N(0, 1.5) for the challenger: RMSE is the standard
    deviation, MAE sd * sqrt(2 / pi); the challenger's minus the champion's RMSE is -0.5."""
    ids = entity_ids()
    record_entities(platform, {ids["champion"]: (model, 4), ids["challenger"]: (model, 5)})
    rows = [
        *traffic(ids["champion"], 1200, error_sd=2.0, seed=11, labelled_share=0.75, latency_ms=20),
        *traffic(ids["challenger"], 600, error_sd=1.5, seed=12, failed_every=50, latency_ms=40),
    ]
    entities = served_entity_names(platform)
    experiment = Experiment(model, champion=4, challenger=5, started_at=T0)

    analysis = analyse_rows(monitoring_frame(platform, rows), entities, experiment, BILL.label, PARAMS, T0)

    champion, challenger = analysis.champion, analysis.challenger
    assert (champion.requests, champion.errors, champion.labelled) == (1200, 0, 900)
    assert (challenger.requests, challenger.errors, challenger.predictions) == (600, 12, 588)
    assert challenger.error_rate == pytest.approx(0.02)
    assert challenger.labelled == 588  # labelled and answered
    assert champion.latency_p95_ms == 29 and challenger.latency_p50_ms in (44, 45)
    assert 30 < champion.prediction_mean < 40 and champion.prediction_std > 10
    assert champion.prediction_p05 < champion.prediction_p50 < champion.prediction_p95
    truths = {
        "champion": {"rmse": 2.0, "mae": 2.0 * np.sqrt(2 / np.pi)},
        "challenger": {"rmse": 1.5, "mae": 1.5 * np.sqrt(2 / np.pi)},
    }
    for variant, metrics in truths.items():
        for metric, truth in metrics.items():
            interval = analysis.variants[variant].error[metric]
            assert interval.low < truth < interval.high, (variant, metric, interval)
            assert interval.low < interval.estimate < interval.high
    rmse, mae = analysis.difference["rmse"], analysis.difference["mae"]
    assert rmse.low < -0.5 < rmse.high and rmse.high < 0
    assert mae.low < -0.5 * np.sqrt(2 / np.pi) < mae.high
    assert decide(analysis, PARAMS, T0 + dt.timedelta(hours=2)).action == "promote"


def test_labelled_rows_above_the_cap_are_a_seeded_sample(platform, model):
    ids = entity_ids()
    record_entities(platform, {ids["champion"]: (model, 1), ids["challenger"]: (model, 2)})
    rows = [
        *traffic(ids["champion"], 400, error_sd=2.0, seed=1),
        *traffic(ids["challenger"], 400, error_sd=2.0, seed=2),
    ]
    frame, entities = monitoring_frame(platform, rows), served_entity_names(platform)
    experiment = Experiment(model, champion=1, challenger=2, started_at=T0)
    capped = PARAMS.model_copy(update={"max_labelled_rows": 150})

    first, again = (analyse_rows(frame, entities, experiment, BILL.label, capped, T0) for _ in range(2))

    assert first.champion.labelled == 400  # counted in full
    assert first.champion.error == again.champion.error  # the same sample and resamples
    full = analyse_rows(frame, entities, experiment, BILL.label, PARAMS, T0)
    assert first.champion.error["rmse"] != full.champion.error["rmse"]


# ----------------------------------------------------------------------------------------------
# Bootstrap intervals (pandas, SciPy)


def test_bootstrap_intervals_cover_the_truth_at_their_level():
    """200 seeded samples of 200 errors N(0, 2): the 95% intervals of RMSE cover 2 about 95% of the time."""
    params = RolloutParams(bootstrap_resamples=1000)
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        squared = rng.normal(0.0, 2.0, 200) ** 2
        interval = bootstrap_interval((squared,), lambda x, axis=-1: np.sqrt(np.mean(x, axis=axis)), params)
        covered += interval.low < 2.0 < interval.high
    assert 0.90 <= covered / 200 <= 0.99


def test_a_classifiers_rmse_is_the_root_of_its_brier_score_and_constant_errors_have_no_spread():
    rng = np.random.default_rng(5)
    probability = rng.uniform(0, 1, 300)
    label = (rng.uniform(0, 1, 300) < probability).astype(float)
    sample = pd.DataFrame(
        {"variant": ["champion"] * 300 + ["challenger"] * 3, "prediction": [*probability, 1, 1, 1]}
        | {"label": [*label, 0.0, 0.0, 0.0]}
    )

    per_variant, difference = error_intervals(sample, PARAMS)

    assert per_variant["champion"]["rmse"].estimate == pytest.approx(
        np.sqrt(brier_score_loss(label, probability))
    )
    assert per_variant["challenger"]["mae"] == Interval(1.0, 1.0, 1.0)
    assert difference["mae"].estimate == pytest.approx(1.0 - np.mean(np.abs(probability - label)))


def test_fewer_than_two_labelled_rows_give_no_interval():
    sample = pd.DataFrame({"variant": ["champion", "champion", "challenger"], "prediction": [1.0, 2.0, 3.0]})
    per_variant, difference = error_intervals(sample.assign(label=0.0), PARAMS)
    assert "rmse" in per_variant["champion"] and per_variant["challenger"] == {} and difference == {}


# ----------------------------------------------------------------------------------------------
# The decision (pure)


BETTER = Interval(-0.5, -0.8, -0.2)


def _analysis(
    *,
    labelled: tuple[int, int] = (500, 500),
    difference: Interval | None = BETTER,
    requests: int = 1000,
    errors: int = 0,
    p95: float = 30.0,
    started: dt.datetime | None = T0,
) -> RolloutAnalysis:
    experiment = Experiment("c.s.m", champion=1, challenger=2, started_at=started)
    variants = {
        "champion": VariantMetrics("champion", 1, requests=1000, labelled=labelled[0], latency_p95_ms=25.0),
        "challenger": VariantMetrics(
            "challenger", 2, requests=requests, errors=errors, labelled=labelled[1], latency_p95_ms=p95
        ),
    }
    return RolloutAnalysis(experiment, T0, 0.95, variants, {"rmse": difference} if difference else {})


DECIDE = RolloutParams(min_labelled=500, min_duration_hours=24, max_error_rate=0.05, max_p95_latency_ms=500)
LATER = T0 + dt.timedelta(hours=25)


@pytest.mark.parametrize(
    ("analysis", "now", "action", "reason"),
    [
        (_analysis(), LATER, "promote", "better: challenger version 2 minus champion version 1 rmse -0.5"),
        (_analysis(difference=Interval(0.4, 0.1, 0.7)), LATER, "rollback", "worse: "),
        (_analysis(difference=Interval(0.4, 0.1, 0.7)), T0 + dt.timedelta(hours=2), "rollback", "worse: "),
        (_analysis(errors=60), T0, "rollback", "failed 6.0% of 1000 requests (limit 5.0%)"),
        (_analysis(p95=900.0), T0, "rollback", "p95 latency is 900 ms (limit 500 ms)"),
        (
            _analysis(labelled=(800, 312)),
            LATER,
            "continue",
            "collecting: 312 of 500 labelled challenger predictions",
        ),
        (_analysis(), T0 + dt.timedelta(hours=6), "continue", "collecting: 6.0 of 24 hours"),
        (
            _analysis(labelled=(10, 20), difference=Interval(0.4, 0.1, 0.7)),
            T0 + dt.timedelta(hours=1),
            "continue",
            "10 of 500 labelled champion predictions; 20 of 500 labelled challenger predictions; 1.0 of 24",
        ),
        (_analysis(difference=Interval(-0.1, -0.3, 0.1)), LATER, "continue", "no clear difference yet"),
        (_analysis(started=None), LATER, "continue", "the endpoint does not serve challenger version 2 yet"),
    ],
)
def test_decide(analysis: RolloutAnalysis, now: dt.datetime, action: str, reason: str):
    decision = decide(analysis, DECIDE, now)
    assert decision.action == action
    assert reason in decision.reason


def test_service_limits_are_judged_after_min_requests():
    slow_and_failing = _analysis(requests=1000, errors=200, p95=900.0)
    assert (
        decide(slow_and_failing, DECIDE.model_copy(update={"min_requests": 1001}), LATER).action == "promote"
    )
    assert decide(slow_and_failing, DECIDE, LATER).action == "rollback"


def test_the_decision_metric_can_be_mae():
    analysis = _analysis(difference=None)
    analysis.difference["mae"] = Interval(-0.3, -0.5, -0.1)
    assert decide(analysis, DECIDE, LATER).action == "continue"
    assert decide(analysis, DECIDE.model_copy(update={"decision_metric": "mae"}), LATER).action == "promote"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"min_labeled": 10}', "min_labeled: Extra inputs are not permitted"),
        ('{"confidence": 1.5}', "confidence: Input should be less than 1"),
        ('{"decision_metric": "r2"}', "decision_metric: Input should be 'rmse' or 'mae'"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_bad_rollout_params_are_named(text: str, problem: str):
    with pytest.raises(RolloutParamsError, match=problem):
        RolloutParams.from_json(text)


def test_rollout_params_default_and_override():
    assert RolloutParams.from_json("") == RolloutParams()
    assert RolloutParams.from_json('{"min_labelled": 200}').min_labelled == 200
