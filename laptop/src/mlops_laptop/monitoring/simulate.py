"""`mlops simulate-traffic`: held-out rows sent to the local endpoint as clients would send them.

Requests mix the four input formats (`dataframe_split`, `dataframe_records`, `instances`,
`inputs`) with one to four rows each, the problem's row id as an extra column and a
`client_request_id`, plus a few malformed requests; `--drift` changes the inputs as the problem
spec's `drift_inputs` says. The labels of the sent rows are written as Parquet files of the
ground-truth table (row id and label).

`--challenger-error-scale` demonstrates a live experiment locally: the labels written for the rows
the challenger answered are moved so that its error is scaled (below 1 it looks better than it is,
above 1 worse), once its answers are known; the champion's rows keep their true labels. A row's
variant is the sticky A/B model's `variant`, else the served entity the `served-model-name` header
names (`<model>-<version>`) matched against the registry's running experiment.

This runs while `mlops serve` holds the endpoint and maybe `mlops run` holds the target's Derby
metastore: it never opens the metastore. The held-out rows are built once with a scratch Spark
session (in-memory catalog, no Hive) and cached as a Parquet file in the local state.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from mlops_laptop.monitoring.heldout import HELDOUT_SEED, held_out_rows
from mlops_laptop.platform.spark import local_spark_builder
from mlops_laptop.serving.app import SERVED_MODEL_NAME_HEADER
from mlops_laptop.serving.endpoint_state import load_records
from mlops_template.atomic_files import write_atomically
from mlops_template.monitoring.unpack import PREDICTION, parse_response
from mlops_template.problem_spec import ProblemSpec
from mlops_template.registry.versions import CHALLENGER, CHAMPION
from mlops_template.serving.spec import served_entity_name

if TYPE_CHECKING:
    from databricks.sdk.service.serving import ServingEndpointDetailed

log = logging.getLogger(__name__)

MALFORMED_SHARE = 0.03
MAX_ROWS_PER_REQUEST = 4
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MALFORMED = ("not_json", "no_format", "bad_value", "missing_input")
BAD_VALUE = "not a number"  # sent where a numeric input is expected


class TrafficError(RuntimeError):
    """The traffic cannot be sent (no endpoint recorded or answering, bad URL)."""


VARIANT = "variant"


@dataclass(frozen=True)
class PlannedRequest:
    """One request body, what it is, and the labels of its rows."""

    kind: str  # an input format, or "malformed:<how>"
    body: bytes
    labels: pd.DataFrame  # the row id and the label


@dataclass(frozen=True)
class Answer:
    """What the endpoint answered to one request."""

    status: int
    served_model: str | None  # the `served-model-name` header: the served entity that answered
    predictions: list[dict[str, Any]] | None  # per row `prediction`, `variant` (A/B model); None: refused


def check_loopback(url: str) -> str:
    """`url` without a trailing slash if it is http on a loopback host, else a TrafficError."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.scheme != "http" or not host:
        raise TrafficError(f"--url must be http://HOST:PORT of the local endpoint, got '{url}'")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise TrafficError(f"--url host '{host}' is not a loopback address: traffic is only sent locally")
    return url.rstrip("/")


def _json_value(value: Any, kind: str) -> Any:
    """A pandas cell as JSON for an input of MLflow type `kind`: missing values null, times as
    ISO-8601 text (naive UTC, as MLflow reads a datetime input)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if kind == "datetime":
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if kind in ("long", "integer"):
        return int(value)
    if kind == "double":
        return float(value)
    return value


def _records(rows: pd.DataFrame, spec: ProblemSpec) -> list[dict[str, Any]]:
    """JSON-ready rows: the row id and every model input in its type (the looked-up ones too: sent
    values override the endpoint's lookup), missing inputs null."""
    kinds = {spec.row_id: "string" if rows[spec.row_id].dtype == object else "long"}
    kinds |= {model_input.name: model_input.type for model_input in spec.model_inputs}
    return [
        {name: _json_value(row[name], kind) for name, kind in kinds.items()}
        for row in rows.to_dict("records")
    ]


def request_body(
    rows: pd.DataFrame, request_format: str, client_request_id: str, spec: ProblemSpec
) -> dict[str, Any]:
    """An invocation body with `rows` in `request_format` (one of FORMATS)."""
    records = _records(rows, spec)
    columns = [spec.row_id, *spec.input_names]
    if request_format == "dataframe_split":
        data: Any = {"columns": columns, "data": [[record[c] for c in columns] for record in records]}
    elif request_format == "inputs":
        data = {column: [record[column] for record in records] for column in columns}
    elif request_format in ("dataframe_records", "instances"):
        data = records
    else:
        raise ValueError(f"unknown request format '{request_format}': expected one of {FORMATS}")
    return {request_format: data, "client_request_id": client_request_id}


def _bad_value(spec: ProblemSpec) -> tuple[str, Any]:
    """An input and a value the model refuses: text for the first numeric input, else an object."""
    numeric = [i.name for i in spec.model_inputs if i.type in ("double", "long", "integer")]
    return (numeric[0], BAD_VALUE) if numeric else (spec.input_names[0], {"not": "a string"})


def malformed_body(rows: pd.DataFrame, how: str, client_request_id: str, spec: ProblemSpec) -> bytes:
    """A body the endpoint refuses: broken JSON, no input format, a mistyped input or a missing
    request input (a looked-up one may be left out: the endpoint looks it up)."""
    first = spec.request_input_names[0]
    if how == "not_json":
        return f'{{"dataframe_records": [{{"{first}": 1.5'.encode()
    records = _records(rows, spec)
    body: dict[str, Any]
    if how == "no_format":
        body = {"data": records}
    elif how == "bad_value":
        name, value = _bad_value(spec)
        body = {"dataframe_records": [record | {name: value} for record in records]}
    elif how == "missing_input":
        body = {"dataframe_records": [{k: v for k, v in r.items() if k != first} for r in records]}
    else:
        raise ValueError(f"unknown malformation '{how}': expected one of {MALFORMED}")
    return json.dumps(body | {"client_request_id": client_request_id}).encode()


def plan_traffic(
    rows: pd.DataFrame,
    requests: int,
    rng: np.random.Generator,
    spec: ProblemSpec,
    *,
    drift: bool,
    run_id: str,
) -> list[PlannedRequest]:
    """`requests` requests of 1-4 random held-out rows each, formats in turn, ~3% malformed."""
    if drift and spec.drift_inputs is None:
        raise TrafficError(f"problem spec {spec.name!r} has no drift_inputs: it cannot simulate drift")
    sizes = rng.integers(1, MAX_ROWS_PER_REQUEST + 1, size=requests)
    total = int(sizes.sum())
    chosen = rows.iloc[rng.choice(len(rows), size=total, replace=total > len(rows))]
    sent = spec.drift_inputs(chosen) if drift and spec.drift_inputs else chosen
    malformed = rng.random(requests) < MALFORMED_SHARE
    ends = np.cumsum(sizes)
    plan = []
    for index, (start, end) in enumerate(zip(ends - sizes, ends, strict=True)):
        batch, client_id = sent.iloc[start:end], f"{run_id}-{index}"
        if malformed[index]:
            how = MALFORMED[index % len(MALFORMED)]
            kind, body = f"malformed:{how}", malformed_body(batch, how, client_id, spec)
        else:
            kind = FORMATS[index % len(FORMATS)]
            body = json.dumps(request_body(batch, kind, client_id, spec)).encode()
        plan.append(PlannedRequest(kind, body, chosen.iloc[start:end][[spec.row_id, spec.label]]))
    return plan


def send_traffic(
    url: str, endpoint: str, plan: list[PlannedRequest], spec: ProblemSpec, token: str | None = None
) -> list[Answer]:
    """POST each planned request to the endpoint's invocations; returns each answer, in plan order."""
    target = f"{check_loopback(url)}/serving-endpoints/{endpoint}/invocations"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    answers = []
    for planned in plan:
        request = urllib.request.Request(target, data=planned.body, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=60) as response:
                text = response.read().decode()
                predictions, _ = parse_response(text, spec.is_classifier)
                served = response.headers.get(SERVED_MODEL_NAME_HEADER)
                if predictions is None:
                    raise TrafficError(f"{served} answered {response.status} but no predictions: {text}")
                answers.append(Answer(response.status, served, predictions))
        except urllib.error.HTTPError as error:
            error.read()
            answers.append(Answer(error.code, error.headers.get(SERVED_MODEL_NAME_HEADER), None))
        except urllib.error.URLError as error:
            raise TrafficError(
                f"no endpoint answers at {url} ({error.reason}): start `mlops serve`"
            ) from None
    return answers


def experiment_variants(endpoint: ServingEndpointDetailed) -> dict[str, str]:
    """Served entity name -> variant (`champion`, `challenger`) of the experiment the endpoint serves,
    read from the tags the deploy task sets (`model_name`, `model_version`, `challenger_version`)."""
    tags = {tag.key: tag.value for tag in endpoint.tags or []}
    model, champion, challenger = (tags.get(k) for k in ("model_name", "model_version", "challenger_version"))
    if not (model and champion and challenger):
        raise TrafficError(
            f"endpoint {endpoint.name} serves no challenger beside the champion (tags: {tags}): "
            "--challenger-error-scale needs an experiment deployed with rollout canary or ab_test"
        )
    return {served_entity_name(model, champion): CHAMPION, served_entity_name(model, challenger): CHALLENGER}


def answered_rows(
    plan: list[PlannedRequest], answers: list[Answer], variants: Mapping[str, str], spec: ProblemSpec
) -> pd.DataFrame:
    """The sent rows (row id, label) with their `prediction` (NaN unless answered) and `variant`:
    the A/B model's, else `variants` of the served entity, else the served entity's name (None
    for a refused request)."""
    frames = []
    for planned, answer in zip(plan, answers, strict=True):
        rows = planned.labels.reset_index(drop=True)
        if answer.predictions is None:  # refused
            frames.append(rows.assign(**{PREDICTION: np.nan, VARIANT: None}))
            continue
        if len(answer.predictions) != len(rows):
            raise TrafficError(
                f"the endpoint answered {len(answer.predictions)} predictions for {len(rows)} rows "
                f"({planned.kind} request, served by {answer.served_model})"
            )
        served = variants.get(answer.served_model or "", answer.served_model)
        predicted = {
            PREDICTION: [row[PREDICTION] for row in answer.predictions],
            VARIANT: [row[VARIANT] or served for row in answer.predictions],
        }
        frames.append(rows.assign(**predicted))
    frame = pd.concat(frames, ignore_index=True)
    return frame.astype({PREDICTION: "float64", spec.label: "float64"})


def check_error_scale(scale: float) -> float:
    """`scale` if it is a finite number above 0, else a TrafficError."""
    if not (np.isfinite(scale) and scale > 0):
        raise TrafficError(
            f"--challenger-error-scale must be a number above 0 (1: the truth, below 1: the challenger "
            f"looks better, above 1: worse), got {scale}"
        )
    return scale


def scaled_labels(
    labels: np.ndarray,
    predictions: np.ndarray,
    variants: Sequence[str | None],
    scale: float,
    spec: ProblemSpec,
    rng: np.random.Generator,
) -> np.ndarray:
    """The labels to write: the challenger's answered rows moved so that its error is scaled by
    `scale`, every other row (champion, refused, no prediction) as it is.

    Regression: label + (1 - scale) * (prediction - label), i.e. prediction + scale * (label -
    prediction). Binary classifier (labels 0/1, predictions P(1)): below 1 a share 1 - scale of the
    challenger's rows get the label it predicts (at the spec's threshold), above 1 a share
    min(1, scale - 1) get the other label; the rows are drawn with `rng`."""
    check_error_scale(scale)
    labels, predictions = np.asarray(labels, dtype="float64"), np.asarray(predictions, dtype="float64")
    moved = (np.asarray(variants, dtype=object) == CHALLENGER) & ~np.isnan(predictions)
    if not spec.is_classifier:
        return np.where(moved, labels + (1.0 - scale) * (predictions - labels), labels)
    predicted = (predictions >= spec.classification_threshold).astype("float64")
    share, wanted = (1.0 - scale, predicted) if scale < 1 else (min(1.0, scale - 1.0), 1.0 - predicted)
    rows = np.flatnonzero(moved)
    chosen = rng.choice(rows, size=round(share * len(rows)), replace=False)
    result = labels.copy()
    result[chosen] = wanted[chosen]
    return result


def error_summary(rows: pd.DataFrame, written: np.ndarray, label: str) -> str:
    """Per variant: the rows answered and the mean absolute error of the labels written vs the truth."""
    answered = rows.assign(written=written)[rows[PREDICTION].notna()]
    parts = []
    for variant, group in answered.groupby(VARIANT, sort=True):
        before = (group[label] - group[PREDICTION]).abs().mean()
        after = (group["written"] - group[PREDICTION]).abs().mean()
        parts.append(f"{variant}: {len(group)} rows answered, MAE {before:.4g} -> {after:.4g}")
    return "; ".join(parts) or "no row answered"


@contextmanager
def scratch_spark() -> Iterator[Any]:
    """This process's Spark session, else a new one without Hive or metastore (stopped after)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    with tempfile.TemporaryDirectory(prefix="mlops-scratch-") as scratch:
        builder = local_spark_builder(
            "mlops-simulate-traffic", warehouse=scratch, master="local[2]", shuffle_partitions=4
        )
        spark = builder.config("spark.sql.catalogImplementation", "in-memory").getOrCreate()
        try:
            yield spark
        finally:
            spark.stop()


def held_out_path(state_dir: Path, spec: ProblemSpec, population: int) -> Path:
    """Where the held-out rows of a spec and population size are cached (the inputs in the name:
    a spec whose inputs change gets new rows)."""
    columns = ",".join([spec.row_id, *(f"{i.name}:{i.type}" for i in spec.model_inputs), spec.label])
    digest = hashlib.sha256(columns.encode()).hexdigest()[:8]
    return state_dir / "monitoring" / f"heldout-{spec.name}-{digest}-{population}-seed{HELDOUT_SEED}.parquet"


def load_held_out(state_dir: Path, spec: ProblemSpec, population: int) -> pd.DataFrame:
    """The held-out rows of a population size, built once and cached under the local state."""
    path = held_out_path(state_dir, spec, population)
    if path.is_file():
        return pd.read_parquet(path)
    log.info("building %d held-out rows with their features (once; cached in %s)", population, path)
    with scratch_spark() as spark:
        rows = held_out_rows(spark, spec, population).toPandas()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temporary: rows.to_parquet(temporary, index=False))
    return rows


def find_endpoint(state_dir: Path, name: str | None) -> ServingEndpointDetailed:
    """The deployed endpoint named `name`, or the only one deployed (as `mlops serve` serves them)."""
    endpoints = {record.name: record.endpoint for record in load_records(state_dir)}
    if name is not None and name in endpoints:
        return endpoints[name]
    if name is None and len(endpoints) == 1:
        return next(iter(endpoints.values()))
    known = ", ".join(sorted(endpoints)) or "none: run the pipeline first, its deploy task deploys it"
    wanted = f"'{name}'" if name else "which one (--endpoint)"
    raise TrafficError(f"endpoint {wanted}? Endpoints deployed in {state_dir}: {known}")
