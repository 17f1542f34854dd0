"""Unpack the AI-Gateway inference table: one row per prediction, with its inputs and its label.

Each payload row is one request: its JSON `request` holds one of `dataframe_split`,
`dataframe_records`, `instances` or `inputs`, its JSON `response` the predictions (or an error).
Requests are read with MLflow's scoring-server parser, the code the endpoint itself reads them
with, inside `mapInPandas` (distributed on Databricks). A refused request becomes one row with its
status and error code and no inputs, so error rates stay computable from the monitoring table.
The model version comes from `system.serving.served_entities`, joined on the opaque
`served_entity_id` the payload holds (on Databricks and locally alike). Where that system table
cannot be read yet (on Databricks only account admins may query it until they grant SELECT) or
has no row for an id yet, the version stays empty and a later run fills it in.

Incremental and idempotent: only requests newer than the table's latest `request_time` minus a
late-arrival margin, and not already unpacked, are added; rows are merged by
(`databricks_request_id`, `row_index`). Rows still without a label or a model version get them
once their trip's ground truth or their served entity's row arrives.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.scoring_server import SUPPORTED_FORMATS, infer_and_parse_data
from pyspark.errors import AnalysisException
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
from mlops_template.platform.base import MissingTableError
from mlops_template.serving.served_entities import SERVED_ENTITIES_TABLE
from mlops_template.training.evaluate import TRIP_ID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform

log = logging.getLogger(__name__)

REQUEST_ID = "databricks_request_id"
ROW_INDEX = "row_index"
REQUEST_TIME = "request_time"
PREDICTION = "prediction"
MODEL_VERSION = "model_version"
MONITORING_KEYS = [REQUEST_ID, ROW_INDEX]
SUCCESS = 200
SERVED_ENTITY_ID = "served_entity_id"
SERVED_ENTITIES_PRODUCER = "the deploy task of job pipeline (it deploys the endpoint and its served entities)"

# Payload columns copied onto every row of a request.
_REQUEST_COLUMNS = [
    (REQUEST_ID, T.StringType()),
    ("client_request_id", T.StringType()),
    (REQUEST_TIME, T.TimestampType()),
    ("request_date", T.DateType()),
    ("served_entity_id", T.StringType()),
    ("status_code", T.IntegerType()),
    ("execution_duration_ms", T.LongType()),
]
_PARSED_COLUMNS = [
    (ROW_INDEX, T.IntegerType()),
    ("request_format", T.StringType()),
    ("error_code", T.StringType()),
    ("variant", T.StringType()),
    (TRIP_ID, T.LongType()),
    *[(name, T.DoubleType()) for name in MODEL_INPUT_COLUMNS],
    (PREDICTION, T.DoubleType()),
]
UNPACKED_SCHEMA = T.StructType(
    [T.StructField(name, kind) for name, kind in _REQUEST_COLUMNS + _PARSED_COLUMNS]
)
# The monitoring table: the unpacked columns, the model version and the label, in this order.
MONITORING_COLUMNS = [
    REQUEST_ID,
    ROW_INDEX,
    *[name for name, _ in _REQUEST_COLUMNS[1:]],
    MODEL_VERSION,
    *[name for name, _ in _PARSED_COLUMNS[1:]],
    LABEL,
]
# Doubles as float64 (null: NaN); times as Spark passed them; the rest as objects (None: null).
_PANDAS_TYPES = {name: "float64" for name in [*MODEL_INPUT_COLUMNS, PREDICTION]} | {
    REQUEST_TIME: None,
    "request_date": None,
}
_INT64_RANGE = (-(2**63), 2**63 - 1)
_EXACT_FLOAT = 2**53  # pandas turns an integer column with gaps into float64


# ----------------------------------------------------------------------------------------------
# One request (pure Python)


def _json_object(text: str | None) -> dict[str, Any] | None:
    """`text` parsed as a JSON object, or None when it is absent, not JSON or not an object."""
    try:
        payload = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def parse_request(text: str | None) -> tuple[str | None, pd.DataFrame | None]:
    """The request's format and its rows, or None for what cannot be read (never raises)."""
    payload = _json_object(text)
    if payload is None:
        return None, None
    formats = [key for key in payload if key in SUPPORTED_FORMATS]
    if len(formats) != 1:
        return None, None
    request_format = formats[0]
    try:
        return request_format, _as_frame(infer_and_parse_data({request_format: payload[request_format]}))
    except Exception:  # the client's data: whatever MLflow cannot read has no rows
        return request_format, None


def _as_frame(parsed: Any) -> pd.DataFrame | None:
    """MLflow's parse result as a frame: columnar dicts and lists of records have named columns."""
    if isinstance(parsed, pd.DataFrame):
        return parsed
    if isinstance(parsed, dict):
        return pd.DataFrame({name: [_scalar(v) for v in np.ravel(values)] for name, values in parsed.items()})
    if isinstance(parsed, list) and parsed and all(isinstance(item, dict) for item in parsed):
        return pd.DataFrame([{name: _scalar(value) for name, value in item.items()} for item in parsed])
    return None  # positional arrays: no column names to map onto the model's inputs


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


def parse_response(text: str | None) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The predictions (`prediction`, `variant`) of an answer, and the error code of a refusal."""
    payload = _json_object(text)
    if payload is None:
        return None, None
    error_code = payload.get("error_code")
    predictions = payload.get("predictions")
    if isinstance(predictions, dict):  # columnar output of a model returning several columns
        try:
            predictions = pd.DataFrame(predictions).to_dict("records")
        except ValueError:  # columns of different lengths
            predictions = None
    if not isinstance(predictions, list):
        return None, error_code if isinstance(error_code, str) else None
    return [_prediction(value) for value in predictions], None


def _prediction(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):  # e.g. the sticky A/B model: {"prediction": ..., "variant": ...}
        variant = value.get("variant")
        return {
            PREDICTION: _number(value.get(PREDICTION)),
            "variant": variant if isinstance(variant, str) else None,
        }
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return {PREDICTION: _number(value), "variant": None}


def _number(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _integer(value: Any) -> int | None:
    """A trip id: an int64 integer, or a digit string; floats only while exact (below 2**53)."""
    if isinstance(value, str):
        text = value.strip()
        value = int(text) if text.lstrip("-").isdigit() else None
    elif isinstance(value, float | np.floating):
        exact = math.isfinite(value) and float(value).is_integer() and abs(value) < _EXACT_FLOAT
        value = int(value) if exact else None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value) if _INT64_RANGE[0] <= int(value) <= _INT64_RANGE[1] else None
    return None


def _input_rows(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    if frame is None:
        return []
    columns = {
        name: [_number(v) for v in frame[name]] if name in frame else [None] * len(frame)
        for name in MODEL_INPUT_COLUMNS
    }
    columns[TRIP_ID] = [_integer(v) for v in frame[TRIP_ID]] if TRIP_ID in frame else [None] * len(frame)
    return pd.DataFrame(columns, dtype=object).to_dict("records")


def exchange_rows(exchange: dict[str, Any]) -> list[dict[str, Any]]:
    """The monitoring rows of one payload row: one per prediction, or one for a refused request."""
    request_format, frame = parse_request(exchange["request"])
    predictions, error_code = parse_response(exchange["response"])
    base = {name: exchange[name] for name, _ in _REQUEST_COLUMNS}
    base |= {"request_format": request_format, "error_code": error_code}
    if exchange["status_code"] != SUCCESS or not predictions:
        return [base | {ROW_INDEX: 0}]
    inputs = _input_rows(frame)
    if len(inputs) != len(predictions):
        inputs = []  # cannot tell which input gave which prediction
    return [
        base | {ROW_INDEX: index} | (inputs[index] if inputs else {}) | prediction
        for index, prediction in enumerate(predictions)
    ]


def unpack_frame(payload: pd.DataFrame) -> pd.DataFrame:
    """Payload rows (as pandas) -> monitoring rows with the columns of UNPACKED_SCHEMA."""
    rows = [row for exchange in payload.to_dict("records") for row in exchange_rows(exchange)]
    return pd.DataFrame(
        {
            name: pd.Series([row.get(name) for row in rows], dtype=_PANDAS_TYPES.get(name, object))
            for name in UNPACKED_SCHEMA.fieldNames()
        }
    )


def _unpack_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield unpack_frame(batch)


# ----------------------------------------------------------------------------------------------
# Tables (Spark)


def entity_versions(served_entities: DataFrame) -> DataFrame:
    """`served_entity_id` -> `model_version` from `system.serving.served_entities`, a change
    history (one row per served entity and endpoint configuration change): its latest row counts."""
    latest = Window.partitionBy(SERVED_ENTITY_ID).orderBy(F.col("change_time").desc())
    return (
        served_entities.withColumn("_change", F.row_number().over(latest))
        .where(F.col("_change") == 1)
        .select(SERVED_ENTITY_ID, F.col("entity_version").cast("string").alias(MODEL_VERSION))
    )


def served_entity_versions(platform: Platform) -> DataFrame | None:
    """The versions of every served entity, or None (with a warning saying what to do) when
    `system.serving.served_entities` cannot be read: the monitoring goes on without versions."""
    try:
        versions = entity_versions(
            platform.read_table(SERVED_ENTITIES_TABLE, produced_by=SERVED_ENTITIES_PRODUCER)
        )
        versions.schema  # noqa: B018 - analysed now: a missing privilege fails here, not in the merge
    except (MissingTableError, AnalysisException) as error:
        log.warning(
            "model versions stay empty until %s can be read; a later run fills them in. On Databricks an "
            "account admin enables the `serving` system schema and grants the job's principal SELECT on "
            "it. (%s)",
            SERVED_ENTITIES_TABLE,
            str(error).splitlines()[0],
        )
        return None
    return versions


def unpack(payload: DataFrame, labels: DataFrame | None, versions: DataFrame | None) -> DataFrame:
    """Payload rows -> monitoring rows (MONITORING_COLUMNS), labelled where the trip's fare is known
    and versioned where `versions` (`entity_versions`) knows the served entity."""
    needed = [name for name, _ in _REQUEST_COLUMNS] + ["request", "response"]
    rows = payload.select(*needed).mapInPandas(_unpack_batches, schema=UNPACKED_SCHEMA)
    if versions is None:
        rows = rows.withColumn(MODEL_VERSION, F.lit(None).cast("string"))
    else:
        rows = rows.join(F.broadcast(versions), on=SERVED_ENTITY_ID, how="left")
    return _with_labels(rows, labels).select(*MONITORING_COLUMNS)


def _with_labels(rows: DataFrame, labels: DataFrame | None) -> DataFrame:
    if labels is None:
        return rows.withColumn(LABEL, F.lit(None).cast("double"))
    return rows.join(labels, on=TRIP_ID, how="left")


def new_requests(payload: DataFrame, monitoring: DataFrame | None, late_arrival: dt.timedelta) -> DataFrame:
    """Payload rows not unpacked yet, looking back `late_arrival` from the latest unpacked request.

    Rows that reach the payload table later than that after newer ones are not picked up.
    """
    if monitoring is None:
        return payload
    watermark = monitoring.agg(F.max(REQUEST_TIME)).first()[0]
    if watermark is None:
        return payload
    since = F.lit(watermark - late_arrival)
    known = monitoring.where(F.col(REQUEST_TIME) >= since).select(REQUEST_ID).distinct()
    return payload.where(F.col(REQUEST_TIME) >= since).join(known, on=REQUEST_ID, how="left_anti")


def newly_completed(
    monitoring: DataFrame, labels: DataFrame | None, versions: DataFrame | None
) -> DataFrame | None:
    """Older rows without a label or a model version that the ground truth (`labels`) or the served
    entities (`versions`) give now, completed; None when there is nothing to complete them from."""
    lookups = [(LABEL, TRIP_ID, labels), (MODEL_VERSION, SERVED_ENTITY_ID, versions)]
    lookups = [(column, key, table) for column, key, table in lookups if table is not None]
    if not lookups:
        return None
    rows = monitoring
    for column, key, table in lookups:
        found = f"_found_{column}"
        rows = (
            rows.join(table.select(key, F.col(column).alias(found)), on=key, how="left")
            .withColumn(f"_new_{column}", F.col(column).isNull() & F.col(found).isNotNull())
            .withColumn(column, F.coalesce(F.col(column), F.col(found)))
        )
    newly = reduce(operator.or_, [F.col(f"_new_{column}") for column, _, _ in lookups])
    return rows.where(newly).select(*MONITORING_COLUMNS)


@dataclass(frozen=True)
class UnpackResult:
    """What one unpack run added: requests and rows unpacked, older rows labelled."""

    requests: int
    rows: int
    completed: int  # older rows that got their label or model version


def unpack_into(
    platform: Platform,
    payload: DataFrame,
    table: str,
    labels: DataFrame | None,
    late_arrival: dt.timedelta,
) -> UnpackResult:
    """Merge the new requests of `payload` (and new labels of older rows) into monitoring `table`."""
    versions = served_entity_versions(platform)
    monitoring = platform.read_table(table) if platform.table_exists(table) else None
    before = monitoring.count() if monitoring is not None else 0
    pending = new_requests(payload, monitoring, late_arrival)
    requests = pending.count()
    completed = newly_completed(monitoring, labels, versions) if monitoring is not None else None
    completed_rows = completed.count() if completed is not None else 0
    changes = unpack(pending, labels, versions)
    if completed is not None and completed_rows:
        changes = changes.unionByName(completed)
    if monitoring is None or requests or completed_rows:
        platform.merge_table(changes, table, keys=MONITORING_KEYS)
    rows = platform.read_table(table).count() - before
    log.info("unpacked %d requests into %d rows of %s", requests, rows, table)
    log.info("completed %d older rows of %s with their label or model version", completed_rows, table)
    return UnpackResult(requests, rows, completed_rows)
