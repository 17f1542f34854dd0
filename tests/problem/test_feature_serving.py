"""Training / serving skew of the taxi example: features looked up at serving time are the features
of training, and the endpoint's prediction from keys is the batch prediction.

The bundle's real pipeline job runs on dense generated trips with `features_end=T` (the feature
tables hold windows ending before T, as they would when T is now), `publish_features` copies the
latest row per zip to the online snapshot, training logs the model with its feature lookups, the
deploy task serves it with `ENABLE_FEATURE_TRACING=true` (Databricks logs the lookup DataFrame to
the inference table only with it: docs "Configure access to resources from model serving
endpoints", "Log feature lookup DataFrames to inference tables"), and `batch_score` scores the trips
picked up from T on with the same lookups (the local point-in-time join; `fe.score_batch` on
Databricks). Then held-out trips after T are sent to the endpoint with their keys only.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from pyspark.sql import functions as F

from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.bundle.runner import LocalJobRunner
from mlops_laptop.pipeline_names import pipeline_names
from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.serving.local_host import local_host
from mlops_template.problem.data import START, generate_trips
from mlops_template.problem.features import PICKUP_FEATURES, PICKUP_TIME
from mlops_template.problem.spec import PROBLEM
from mlops_template.training.config import TrainingConfig
from mlops_template.training.dataset import build_training_set
from mlops_template.training.evaluate import is_holdout

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCE = "test.skew_source.trips"
VARIABLES = {
    "source_table": SOURCE,
    "schema": "suite_skew",
    "model_name": "skew_fare_model",
    "endpoint_name": "skew-test",
    "inference_table_prefix": "skew_endpoint",
    "experiment_name": "/Shared/test-skew",
    "training_params": json.dumps({"n_estimators": 60, "num_leaves": 15, "learning_rate": 0.2}),
}
DAYS = 1  # 3,000 trips squeezed into one day: ~125 an hour, so most windows hold trips
T = START + dt.timedelta(hours=18)  # on the 15- and 30-minute grids of both tables
AFTER_T = dt.timedelta(minutes=60)


@pytest.fixture(scope="module")
def served(platform: LocalPlatform):
    """The pipeline job run with features up to T and scoring from T; the endpoint it deployed."""
    trips = generate_trips(platform.spark, rows=3_000, seed=5)
    since_start = F.unix_timestamp(PICKUP_TIME) - int(START.replace(tzinfo=dt.UTC).timestamp())
    shift = since_start - since_start / (60 / DAYS)  # the generator spans 60 days
    dense = trips.withColumns(
        {
            column: F.timestamp_seconds(F.unix_timestamp(column) - shift.cast("long"))
            for column in (PICKUP_TIME, "tpep_dropoff_datetime")
        }
    )
    platform.save_table(dense, SOURCE)
    bundle = load_bundle(PROJECT_ROOT, "dev", VARIABLES)
    runner = LocalJobRunner.for_bundle(bundle, platform.task_values, platform.state_dir / "runs")
    at_t = T.isoformat()
    result = runner.run("pipeline", {"features_end": at_t, "score_start": at_t})
    assert result.succeeded, {t.task_key: t.error for t in result.tasks if t.error}
    return pipeline_names(bundle)


@pytest.fixture(scope="module")
def held_out(platform: LocalPlatform, served) -> pd.DataFrame:
    """Held-out trips (the training split's holdout) picked up in the hour from T, with the
    request inputs, the trip id, their batch prediction and their training-set features."""
    schema = f"{served.catalog}.{served.schema}"
    rows = platform.read_table(PROBLEM.prepared_table_name(schema))
    test_size = TrainingConfig.from_overrides({}, PROBLEM).test_size
    after_t = rows.where((F.col(PICKUP_TIME) >= F.lit(T)) & (F.col(PICKUP_TIME) < F.lit(T + AFTER_T))).where(
        is_holdout(test_size, PROBLEM.row_id)
    )
    features = build_training_set(platform, PROBLEM, after_t, schema)
    batch = platform.read_table(PROBLEM.predictions_table_name(schema)).select(PROBLEM.row_id, "prediction")
    frame = features.join(batch, PROBLEM.row_id).toPandas()
    assert len(frame) >= 15
    return frame.sort_values(PROBLEM.row_id).reset_index(drop=True)


def _request(rows: pd.DataFrame) -> dict:
    """What an application sends: the request inputs and the trip id, times as ISO-8601 text."""
    keys = rows[[PROBLEM.row_id, *PROBLEM.request_input_names]].copy()
    for column in keys.select_dtypes("datetime").columns:
        keys[column] = keys[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return {"dataframe_records": json.loads(keys.to_json(orient="records"))}


@pytest.fixture(scope="module")
def answered(platform: LocalPlatform, served, held_out: pd.DataFrame) -> tuple[list[float], pd.DataFrame]:
    """The endpoint's predictions for keys-only requests (one trip each), and the payload rows."""
    predictions = []
    with local_host(platform.state_dir) as host:
        url = f"{host.url}/serving-endpoints/{served.endpoint}/invocations"
        for index in range(len(held_out)):
            answer = requests.post(url, json=_request(held_out.iloc[[index]]), timeout=60)
            assert answer.status_code == 200, answer.text
            predictions.extend(answer.json()["predictions"])
    payload = platform.read_table(served.monitoring_tables.payload).where(F.col("status_code") == 200)
    return predictions, payload.toPandas()


def test_the_endpoint_predicts_from_keys_what_batch_scoring_predicts(held_out, answered):
    """Same features, same model: the prediction from keys equals the batch prediction per trip."""
    predictions, _ = answered
    np.testing.assert_allclose(predictions, held_out["prediction"].to_numpy(), rtol=1e-9)


def test_looked_up_features_equal_the_training_set_features(held_out, answered):
    """Each request's inference record carries the values the endpoint looked up; they equal the
    point-in-time training-set features of the same trip. Both kinds are compared: values found
    (pickup windows for most trips; drop-off windows, which end half an hour before T and look back
    one hour, for a few) and the lookups' defaults."""
    _, payload = answered
    logged = {}
    for request, response in zip(payload["request"], payload["response"], strict=True):
        trip = json.loads(request)["dataframe_records"][0][PROBLEM.row_id]
        lookup = json.loads(response)["databricks_output"]["feature_lookup"]
        logged[trip] = (dict(zip(lookup["columns"], lookup["data"][0], strict=True)), lookup["defaulted"][0])
    assert set(logged) == set(held_out[PROBLEM.row_id])
    found = dict.fromkeys(PROBLEM.looked_up_inputs, 0)
    for _, trip in held_out.iterrows():
        values, defaulted = logged[trip[PROBLEM.row_id]]
        for feature in PROBLEM.looked_up_inputs:
            expected = trip[feature]
            assert values[feature] == pytest.approx(expected, nan_ok=True) or (
                values[feature] is None and pd.isna(expected)
            ), (trip[PROBLEM.row_id], feature)
        for feature in PROBLEM.looked_up_inputs:
            found[feature] += feature not in defaulted
    assert min(found.values()) >= 3 and found[PICKUP_FEATURES[0]] >= len(held_out) // 2, found
    assert max(found.values()) < len(held_out), "some lookups must have fallen back to the default"
