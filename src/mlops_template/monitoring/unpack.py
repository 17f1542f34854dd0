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

The problem spec says which columns a row has: its row id (kept as a string, whatever its type,
so any id joins the ground truth exactly), the model inputs in their signature types, and the
label (a double). A binary classifier's `prediction` is the probability of label 1, taken from
the per-class probabilities the served model returns (`[[p0, p1], ...]` or `{"0": p0, "1": p1}`
per row), with `predicted_label` at the spec's threshold.

Incremental and idempotent: only requests newer than the table's latest `request_time` minus a
late-arrival margin, and not already unpacked, are added; rows are merged by
(`databricks_request_id`, `row_index`). Rows still without a label or a model version get them
once their row's ground truth or their served entity's row arrives.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import operator
from collections.abc import Callable, Iterator
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

from mlops_template.platform.base import MissingTableError
from mlops_template.problem_spec import ModelInput, ProblemSpec
from mlops_template.serving.served_entities import SERVED_ENTITIES_TABLE

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform

log = logging.getLogger(__name__)

REQUEST_ID = "databricks_request_id"
ROW_INDEX = "row_index"
REQUEST_TIME = "request_time"
PREDICTION = "prediction"
PREDICTED_LABEL = "predicted_label"
MODEL_VERSION = "model_version"
MONITORING_KEYS = [REQUEST_ID, ROW_INDEX]
SUCCESS = 200
SERVED_ENTITY_ID = "served_entity_id"
SERVED_ENTITIES_PRODUCER = "the deploy task of job pipeline (it deploys the endpoint and its served entities)"
POSITIVE_CLASS = "1"  # the key of label 1 in a per-class output (JSON object keys are strings)

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
_SPARK_TYPES = {
    "double": T.DoubleType(),
    "long": T.LongType(),
    "integer": T.IntegerType(),
    "boolean": T.BooleanType(),
    "string": T.StringType(),
}
_INT64_RANGE = (-(2**63), 2**63 - 1)
_INT32_RANGE = (-(2**31), 2**31 - 1)
_EXACT_FLOAT = 2**53  # pandas turns an integer column with gaps into float64


@dataclass(frozen=True)
class ServedColumns:
    """What unpacking needs of the problem spec (small and picklable: it travels to the workers)."""

    row_id: str
    inputs: tuple[ModelInput, ...]
    label: str
    classifier: bool
    threshold: float

    @classmethod
    def of(cls, spec: ProblemSpec) -> ServedColumns:
        return cls(
            spec.row_id, spec.model_inputs, spec.label, spec.is_classifier, spec.classification_threshold
        )

    def parsed_fields(self) -> list[tuple[str, T.DataType]]:
        """The columns read from a request and its response, after the request's columns."""
        return [
            (ROW_INDEX, T.IntegerType()),
            ("request_format", T.StringType()),
            ("error_code", T.StringType()),
            ("variant", T.StringType()),
            (self.row_id, T.StringType()),
            *[(model_input.name, _SPARK_TYPES[model_input.type]) for model_input in self.inputs],
            (PREDICTION, T.DoubleType()),
        ]

    def unpacked_schema(self) -> T.StructType:
        """The rows `unpack_frame` returns."""
        return T.StructType([T.StructField(n, t) for n, t in _REQUEST_COLUMNS + self.parsed_fields()])

    def monitoring_columns(self) -> list[str]:
        """The monitoring table: the unpacked columns, the model version and the label, in order."""
        return [
            REQUEST_ID,
            ROW_INDEX,
            *[name for name, _ in _REQUEST_COLUMNS[1:]],
            MODEL_VERSION,
            *[name for name, _ in self.parsed_fields()[1:]],
            *([PREDICTED_LABEL] if self.classifier else []),
            self.label,
        ]

    def pandas_types(self) -> dict[str, str | None]:
        """Doubles as float64 (null: NaN); times as Spark passed them; the rest as objects (None: null)."""
        doubles = [i.name for i in self.inputs if i.type == "double"] + [PREDICTION]
        return {name: "float64" for name in doubles} | {REQUEST_TIME: None, "request_date": None}


def monitoring_columns(spec: ProblemSpec) -> list[str]:
    """The columns of the monitoring table of `spec`'s model, in order."""
    return ServedColumns.of(spec).monitoring_columns()


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


def parse_response(
    text: str | None, classifier: bool = False
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The predictions (`prediction`, `variant`) of an answer, and the error code of a refusal.

    A classifier's prediction is the probability of label 1 of its per-class output."""
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
    return [_prediction(value, classifier) for value in predictions], None


def _prediction(value: Any, classifier: bool) -> dict[str, Any]:
    variant = None
    if isinstance(value, dict) and PREDICTION in value:  # e.g. the sticky A/B model's rows
        variant, value = value.get("variant"), value[PREDICTION]
    return {
        PREDICTION: _probability(value) if classifier else _value(value),
        "variant": variant if isinstance(variant, str) else None,
    }


def _value(value: Any) -> float | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return _number(value)


def _probability(value: Any) -> float | None:
    """P(label 1) of `[p0, p1]`, `{"0": p0, "1": p1}` or a lone probability; None otherwise."""
    if isinstance(value, dict):
        value = value.get(POSITIVE_CLASS)
    elif isinstance(value, list) and len(value) == 2:
        value = value[1]
    probability = _value(value)
    return probability if probability is not None and 0.0 <= probability <= 1.0 else None


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


def _integer(value: Any, bounds: tuple[int, int] = _INT64_RANGE) -> int | None:
    """An integer within `bounds`, or a digit string; floats only while exact (below 2**53)."""
    if isinstance(value, str):
        text = value.strip()
        value = int(text) if text.lstrip("-").isdigit() else None
    elif isinstance(value, float | np.floating):
        exact = math.isfinite(value) and float(value).is_integer() and abs(value) < _EXACT_FLOAT
        value = int(value) if exact else None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value) if bounds[0] <= int(value) <= bounds[1] else None
    return None


def _boolean(value: Any) -> bool | None:
    return bool(value) if isinstance(value, bool | np.bool_) else None


def _string(value: Any) -> str | None:
    return str(value) if isinstance(value, str) else None


def _row_id(value: Any) -> str | None:
    """A row id as text: a string as sent, an integer (or an exact float) in decimal."""
    if isinstance(value, str):
        return value
    integer = _integer(value)
    return None if integer is None else str(integer)


_READERS: dict[str, Callable[[Any], Any]] = {
    "double": _number,
    "long": _integer,
    "integer": lambda value: _integer(value, _INT32_RANGE),
    "boolean": _boolean,
    "string": _string,
}


def _input_rows(frame: pd.DataFrame | None, columns: ServedColumns) -> list[dict[str, Any]]:
    """The row id and model inputs of each request row, each read as its type (else None)."""
    if frame is None:
        return []
    readers = [(columns.row_id, _row_id)] + [(i.name, _READERS[i.type]) for i in columns.inputs]
    values = {
        name: [read(v) for v in frame[name]] if name in frame else [None] * len(frame)
        for name, read in readers
    }
    return pd.DataFrame(values, dtype=object).to_dict("records")


def exchange_rows(exchange: dict[str, Any], columns: ServedColumns) -> list[dict[str, Any]]:
    """The monitoring rows of one payload row: one per prediction, or one for a refused request."""
    request_format, frame = parse_request(exchange["request"])
    predictions, error_code = parse_response(exchange["response"], columns.classifier)
    base = {name: exchange[name] for name, _ in _REQUEST_COLUMNS}
    base |= {"request_format": request_format, "error_code": error_code}
    if exchange["status_code"] != SUCCESS or not predictions:
        return [base | {ROW_INDEX: 0}]
    inputs = _input_rows(frame, columns)
    if len(inputs) != len(predictions):
        inputs = []  # cannot tell which input gave which prediction
    return [
        base | {ROW_INDEX: index} | (inputs[index] if inputs else {}) | prediction
        for index, prediction in enumerate(predictions)
    ]


def unpack_frame(payload: pd.DataFrame, columns: ServedColumns) -> pd.DataFrame:
    """Payload rows (as pandas) -> monitoring rows with the columns of `columns.unpacked_schema()`."""
    rows = [row for exchange in payload.to_dict("records") for row in exchange_rows(exchange, columns)]
    types = columns.pandas_types()
    return pd.DataFrame(
        {
            name: pd.Series([row.get(name) for row in rows], dtype=types.get(name, object))
            for name in columns.unpacked_schema().fieldNames()
        }
    )


def _unpacker(columns: ServedColumns) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def unpack_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield unpack_frame(batch, columns)

    return unpack_batches


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


def unpack(
    payload: DataFrame, labels: DataFrame | None, versions: DataFrame | None, spec: ProblemSpec
) -> DataFrame:
    """Payload rows -> monitoring rows (`monitoring_columns(spec)`), labelled where the row's label
    is known and versioned where `versions` (`entity_versions`) knows the served entity."""
    columns = ServedColumns.of(spec)
    needed = [name for name, _ in _REQUEST_COLUMNS] + ["request", "response"]
    rows = payload.select(*needed).mapInPandas(_unpacker(columns), schema=columns.unpacked_schema())
    if columns.classifier:
        predicted = (F.col(PREDICTION) >= F.lit(columns.threshold)).cast("double")
        rows = rows.withColumn(PREDICTED_LABEL, predicted)
    if versions is None:
        rows = rows.withColumn(MODEL_VERSION, F.lit(None).cast("string"))
    else:
        rows = rows.join(F.broadcast(versions), on=SERVED_ENTITY_ID, how="left")
    if labels is None:
        rows = rows.withColumn(spec.label, F.lit(None).cast("double"))
    else:
        rows = rows.join(labels, on=spec.row_id, how="left")
    return rows.select(*columns.monitoring_columns())


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
    monitoring: DataFrame, labels: DataFrame | None, versions: DataFrame | None, spec: ProblemSpec
) -> DataFrame | None:
    """Older rows without a label or a model version that the ground truth (`labels`) or the served
    entities (`versions`) give now, completed; None when there is nothing to complete them from."""
    lookups = [(spec.label, spec.row_id, labels), (MODEL_VERSION, SERVED_ENTITY_ID, versions)]
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
    return rows.where(newly).select(*monitoring_columns(spec))


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
    spec: ProblemSpec,
) -> UnpackResult:
    """Merge the new requests of `payload` (and new labels of older rows) into monitoring `table`."""
    versions = served_entity_versions(platform)
    monitoring = platform.read_table(table) if platform.table_exists(table) else None
    before = monitoring.count() if monitoring is not None else 0
    pending = new_requests(payload, monitoring, late_arrival)
    requests = pending.count()
    completed = newly_completed(monitoring, labels, versions, spec) if monitoring is not None else None
    completed_rows = completed.count() if completed is not None else 0
    changes = unpack(pending, labels, versions, spec)
    if completed is not None and completed_rows:
        changes = changes.unionByName(completed)
    if monitoring is None or requests or completed_rows:
        platform.merge_table(changes, table, keys=MONITORING_KEYS)
    rows = platform.read_table(table).count() - before
    log.info("unpacked %d requests into %d rows of %s", requests, rows, table)
    log.info("completed %d older rows of %s with their label or model version", completed_rows, table)
    return UnpackResult(requests, rows, completed_rows)
