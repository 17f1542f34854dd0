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

Model inputs a client did not send were looked up by the endpoint (the features of a model logged
with its feature lookups). Each input comes from the request when sent (non-null: a sent value
overrides the lookup), else from the lookup the endpoint logged in its response under
`databricks_output.feature_lookup` (`columns`, `data` and the outputs `defaulted` per row: no
usable row, so the lookup's default or null). Rows whose looked-up inputs are in neither (Databricks
logs the lookup only with the served entity's `ENABLE_FEATURE_TRACING=true`) get them from a
point-in-time lookup against the offline feature tables as of the row's lookup time. Each row says
where its looked-up inputs came from (`feature_source`: `request` when all were sent, else `online`
or `offline`) and which of them were defaulted (`defaulted_features`; null when unknown).

A monitoring table written before the spec's model took new inputs gains their columns (null in
older rows); columns of inputs the model no longer takes stay, null in newer rows. A column whose
type changed cannot be merged into: the error says to drop the table, which the next run rebuilds
from the payload table.
"""

from __future__ import annotations

import dataclasses
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
from mlops_template.platform.feature_store import LookupSpec
from mlops_template.problem_spec import ModelInput, ProblemSpec
from mlops_template.serving.served_entities import SERVED_ENTITIES_TABLE

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_template.platform import Platform
    from mlops_template.platform.feature_store import FeatureStore

log = logging.getLogger(__name__)

REQUEST_ID = "databricks_request_id"
ROW_INDEX = "row_index"
REQUEST_TIME = "request_time"
PREDICTION = "prediction"
PREDICTED_LABEL = "predicted_label"
MODEL_VERSION = "model_version"
FEATURE_SOURCE = "feature_source"
DEFAULTED_FEATURES = "defaulted_features"
MONITORING_KEYS = [REQUEST_ID, ROW_INDEX]
SUCCESS = 200
SERVED_ENTITY_ID = "served_entity_id"
SERVED_ENTITIES_PRODUCER = "the deploy task of job pipeline (it deploys the endpoint and its served entities)"
POSITIVE_CLASS = "1"  # the key of label 1 in a per-class output (JSON object keys are strings)
# Where a row's looked-up inputs came from: all sent by the client, the lookup the endpoint
# logged, or the offline feature tables (the endpoint logged none).
FROM_REQUEST, FROM_ONLINE, FROM_OFFLINE = "request", "online", "offline"
_SENT_PREFIX = "_sent_"  # looked-up inputs as sent, beside the offline lookup's outputs

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
    "datetime": T.TimestampType(),  # naive UTC, as the Spark session's time zone reads it
}
_INT64_RANGE = (-(2**63), 2**63 - 1)
_INT32_RANGE = (-(2**31), 2**31 - 1)
_EXACT_FLOAT = 2**53  # pandas turns an integer column with gaps into float64


class MonitoringTableError(ValueError):
    """The monitoring table cannot take the rows of the problem spec's model (a column changed type)."""


@dataclass(frozen=True)
class ServedColumns:
    """What unpacking needs of the problem spec (small and picklable: it travels to the workers)."""

    row_id: str
    inputs: tuple[ModelInput, ...]
    looked_up: tuple[str, ...]  # the inputs the feature lookups produce
    label: str
    classifier: bool
    threshold: float

    @classmethod
    def of(cls, spec: ProblemSpec) -> ServedColumns:
        return cls(
            spec.row_id,
            spec.model_inputs,
            tuple(spec.looked_up_inputs),
            spec.label,
            spec.is_classifier,
            spec.classification_threshold,
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
            (FEATURE_SOURCE, T.StringType()),
            (DEFAULTED_FEATURES, T.ArrayType(T.StringType())),
            (PREDICTION, T.DoubleType()),
        ]

    def unpacked_schema(self) -> T.StructType:
        """The rows `unpack_frame` returns."""
        return T.StructType([T.StructField(n, t) for n, t in _REQUEST_COLUMNS + self.parsed_fields()])

    def monitoring_schema(self) -> T.StructType:
        """The monitoring table: the unpacked columns, the model version and the label, in order."""
        fields = _REQUEST_COLUMNS + self.parsed_fields()
        fields += [
            (MODEL_VERSION, T.StringType()),
            (PREDICTED_LABEL, T.DoubleType()),
            (self.label, T.DoubleType()),
        ]
        types = dict(fields)
        return T.StructType([T.StructField(name, types[name]) for name in self.monitoring_columns()])

    def monitoring_columns(self) -> list[str]:
        """The monitoring table's columns, in order."""
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
        """Doubles as float64 (null: NaN), datetime inputs as datetime64 (null: NaT), request times
        as Spark passed them; the rest as objects (None: null)."""
        doubles = [i.name for i in self.inputs if i.type == "double"] + [PREDICTION]
        times = [i.name for i in self.inputs if i.type == "datetime"]
        return (
            {name: "float64" for name in doubles}
            | {name: "datetime64[ns]" for name in times}
            | {REQUEST_TIME: None, "request_date": None}
        )


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
    return _predictions(_json_object(text), classifier)


def _predictions(
    payload: dict[str, Any] | None, classifier: bool
) -> tuple[list[dict[str, Any]] | None, str | None]:
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


def _datetime(value: Any) -> pd.Timestamp | None:
    """A naive UTC time from an ISO-8601 string (as JSON carries one) or a datetime; a time with
    an offset is converted to UTC. Numbers are not times (MLflow refuses them for a datetime input)."""
    if isinstance(value, str):
        try:
            value = pd.Timestamp(value.strip())
        except ValueError:
            return None
    if not isinstance(value, dt.datetime | np.datetime64) or pd.isna(value):
        return None
    time = pd.Timestamp(value)
    return time.tz_convert("UTC").tz_localize(None) if time.tzinfo is not None else time


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
    "datetime": _datetime,
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


@dataclass(frozen=True)
class LookedUp:
    """What the endpoint logged of one row's feature lookup: the model inputs it looked up (read
    as their types) and the outputs it defaulted (None: not logged)."""

    values: dict[str, Any]
    defaulted: list[str] | None


def parse_feature_lookup(payload: dict[str, Any] | None, columns: ServedColumns) -> list[LookedUp] | None:
    """The rows of `databricks_output.feature_lookup` of a response (`columns`, `data`, and
    `defaulted`: per row the outputs without a usable feature row); None when absent or unreadable."""
    output = payload.get("databricks_output") if payload is not None else None
    trace = output.get("feature_lookup") if isinstance(output, dict) else None
    if not isinstance(trace, dict):
        return None
    names, data, defaulted = trace.get("columns"), trace.get("data"), trace.get("defaulted")
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        return None
    if not (isinstance(data, list) and all(isinstance(row, list) and len(row) == len(names) for row in data)):
        return None
    readers = {i.name: _READERS[i.type] for i in columns.inputs}
    readable = isinstance(defaulted, list) and len(defaulted) == len(data)
    return [
        LookedUp(
            {name: readers[name](value) for name, value in zip(names, row, strict=True) if name in readers},
            _names(defaulted[index]) if readable else None,
        )
        for index, row in enumerate(data)
    ]


def _names(value: Any) -> list[str] | None:
    return value if isinstance(value, list) and all(isinstance(name, str) for name in value) else None


def with_features(sent: dict[str, Any], looked_up: LookedUp | None, columns: ServedColumns) -> dict[str, Any]:
    """A row's model inputs: each as sent, else as the endpoint logged its lookup; with the
    feature source and the defaulted outputs. A row whose looked-up inputs are neither is left
    to the offline lookup (`FROM_OFFLINE`)."""
    missing = [name for name in columns.looked_up if sent.get(name) is None]
    if not missing:
        return sent | {FEATURE_SOURCE: FROM_REQUEST, DEFAULTED_FEATURES: []}
    if looked_up is None:
        return sent | {FEATURE_SOURCE: FROM_OFFLINE, DEFAULTED_FEATURES: None}
    filled = {name: value for name, value in looked_up.values.items() if sent.get(name) is None}
    defaulted = looked_up.defaulted
    return (
        sent
        | filled
        | {
            FEATURE_SOURCE: FROM_ONLINE,
            DEFAULTED_FEATURES: None if defaulted is None else [n for n in defaulted if n in missing],
        }
    )


def exchange_rows(exchange: dict[str, Any], columns: ServedColumns) -> list[dict[str, Any]]:
    """The monitoring rows of one payload row: one per prediction, or one for a refused request."""
    request_format, frame = parse_request(exchange["request"])
    response = _json_object(exchange["response"])
    predictions, error_code = _predictions(response, columns.classifier)
    base = {name: exchange[name] for name, _ in _REQUEST_COLUMNS}
    base |= {"request_format": request_format, "error_code": error_code}
    if exchange["status_code"] != SUCCESS or not predictions:
        return [base | {ROW_INDEX: 0}]
    inputs = _input_rows(frame, columns)
    if len(inputs) != len(predictions):
        inputs = []  # cannot tell which input gave which prediction
    looked_up = parse_feature_lookup(response, columns)
    if looked_up is not None and len(looked_up) != len(predictions):
        looked_up = None
    rows = [
        with_features(row, looked_up[index] if looked_up else None, columns)
        for index, row in enumerate(inputs)
    ]
    return [
        base | {ROW_INDEX: index} | (rows[index] if rows else {}) | prediction
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


def offline_features(rows: DataFrame, spec: ProblemSpec, store: FeatureStore, schema: str) -> DataFrame:
    """`rows` whose looked-up inputs were neither sent nor logged (`FROM_OFFLINE`) completed from
    the feature tables of `schema` (`catalog.schema`), as of each row's lookup time (the spec's
    lookups, as training joins them). Sent values are kept; an output without a usable feature row
    gets the lookup's default (else null) and is listed in `defaulted_features`. The feature tables
    are read only when some row needs them."""
    names = spec.looked_up_inputs
    offline = F.col(FEATURE_SOURCE).eqNullSafe(FROM_OFFLINE)
    pending = rows.where(offline)
    if not names or pending.isEmpty():  # without lookups no row is marked: no Spark job for it
        return rows
    log.info("rows without their looked-up features: looking them up in the feature tables of %s", schema)
    lookups = [LookupSpec.of(lookup) for lookup in spec.feature_lookups(spec.feature_table_names(schema))]
    # Without defaults, a null output tells a missing feature row; the defaults are applied below.
    plain = [dataclasses.replace(lookup, default_values={}).to_feature_lookup() for lookup in lookups]
    defaults = {output: value for lookup in lookups for output, value in lookup.default_values.items()}
    types = {i.name: _SPARK_TYPES[i.type] for i in spec.model_inputs}
    sent = {name: f"{_SENT_PREFIX}{name}" for name in names}
    joined = store.create_training_set(
        pending.select(*[F.col(c).alias(sent.get(c, c)) for c in pending.columns]), plain, label=None
    ).load_df()
    unsent_missing = {name: F.col(sent[name]).isNull() & F.col(name).isNull() for name in names}
    values = {
        name: F.coalesce(
            F.col(sent[name]),
            F.col(name).cast(types[name]),
            *([F.lit(defaults[name]).cast(types[name])] if name in defaults else []),
        )
        for name in names
    }
    defaulted = F.filter(
        F.array(*[F.when(missing, F.lit(name)) for name, missing in unsent_missing.items()]),
        lambda name: name.isNotNull(),
    )
    completed = joined.select(
        *[
            values[c].alias(c) if c in values else defaulted.alias(c) if c == DEFAULTED_FEATURES else F.col(c)
            for c in rows.columns
        ]
    )
    return rows.where(~offline).unionByName(completed)


def unpack(
    payload: DataFrame,
    labels: DataFrame | None,
    versions: DataFrame | None,
    spec: ProblemSpec,
    store: FeatureStore,
    feature_schema: str,
) -> DataFrame:
    """Payload rows -> monitoring rows (`monitoring_columns(spec)`), labelled where the row's label
    is known and versioned where `versions` (`entity_versions`) knows the served entity; looked-up
    inputs neither sent nor logged come from the feature tables of `feature_schema` via `store`."""
    columns = ServedColumns.of(spec)
    needed = [name for name, _ in _REQUEST_COLUMNS] + ["request", "response"]
    rows = payload.select(*needed).mapInPandas(_unpacker(columns), schema=columns.unpacked_schema())
    rows = offline_features(rows, spec, store, feature_schema)
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
    return rows.where(newly).select(*monitoring.columns)


def evolve_table(platform: Platform, table: str, wanted: T.StructType) -> None:
    """Add the columns of `wanted` that monitoring `table` lacks (null in its rows); a column whose
    type differs is a MonitoringTableError saying how to rebuild the table."""
    current = {field.name: field.dataType.simpleString() for field in platform.read_table(table).schema}
    changed = [
        f"{field.name} ({current[field.name]} -> {field.dataType.simpleString()})"
        for field in wanted
        if field.name in current and current[field.name] != field.dataType.simpleString()
    ]
    if changed:
        raise MonitoringTableError(
            f"monitoring table {table} has columns of other types than the problem spec's model gives "
            f"now: {', '.join(changed)}. Drop (or rename) the table: the next unpack rebuilds it from "
            "every request still in the payload table"
        )
    if added := [field for field in wanted if field.name not in current]:
        definitions = ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in added)
        platform.spark.sql(f"ALTER TABLE {platform.table_name(table)} ADD COLUMNS ({definitions})")
        log.info("added columns %s to %s (null in its older rows)", [field.name for field in added], table)


def _conformed(rows: DataFrame, schema: T.StructType) -> DataFrame:
    """`rows` with the columns of `schema`: those it lacks (inputs an older model took) null."""
    return rows.select(
        *[
            F.col(field.name)
            if field.name in rows.columns
            else F.lit(None).cast(field.dataType).alias(field.name)
            for field in schema
        ]
    )


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
    feature_schema: str,
) -> UnpackResult:
    """Merge the new requests of `payload` (and new labels of older rows) into monitoring `table`;
    looked-up inputs neither sent nor logged come from the feature tables of `feature_schema`."""
    versions = served_entity_versions(platform)
    monitoring = None
    if platform.table_exists(table):
        evolve_table(platform, table, ServedColumns.of(spec).monitoring_schema())
        monitoring = platform.read_table(table)
    before = monitoring.count() if monitoring is not None else 0
    pending = new_requests(payload, monitoring, late_arrival)
    requests = pending.count()
    completed = newly_completed(monitoring, labels, versions, spec) if monitoring is not None else None
    completed_rows = completed.count() if completed is not None else 0
    changes = unpack(pending, labels, versions, spec, platform.feature_store, feature_schema)
    if monitoring is not None:
        changes = _conformed(changes, monitoring.schema)
    if completed is not None and completed_rows:
        changes = changes.unionByName(completed)
    if monitoring is None or requests or completed_rows:
        platform.merge_table(changes, table, keys=MONITORING_KEYS)
    rows = platform.read_table(table).count() - before
    log.info("unpacked %d requests into %d rows of %s", requests, rows, table)
    log.info("completed %d older rows of %s with their label or model version", completed_rows, table)
    return UnpackResult(requests, rows, completed_rows)
