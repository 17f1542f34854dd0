"""`mlops simulate-traffic`: held-out trips sent to the local endpoint as clients would send them.

Requests mix the four input formats (`dataframe_split`, `dataframe_records`, `instances`,
`inputs`) with one to four trips each, `trip_id` as an extra column and a `client_request_id`,
plus a few malformed requests; `--drift` shifts inputs (twice the distance, evening pickups).
The actual fares of the sent trips are written as Parquet files of the ground-truth table.

This runs while `mlops serve` holds the endpoint and maybe `mlops run` holds the target's Derby
metastore: it never opens the metastore. The held-out trips are built once with a scratch Spark
session (in-memory catalog, no Hive) and cached as a Parquet file in the local state.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import typer

from mlops_template.features.columns import LABEL, MODEL_INPUT_COLUMNS
from mlops_template.monitoring.ground_truth import local_ground_truth_dir, write_ground_truth
from mlops_template.monitoring.heldout import HELDOUT_SEED, drifted, held_out_trips
from mlops_template.monitoring.tables import MonitoringTables
from mlops_template.platform.local import DEFAULT_SAMPLE_ROWS, LocalPlatform
from mlops_template.serving.spec import EndpointConfig, load_endpoint_specs
from mlops_template.training.evaluate import TRIP_ID

log = logging.getLogger(__name__)

MAX_REQUESTS = 10_000
MALFORMED_SHARE = 0.03
MAX_ROWS_PER_REQUEST = 4
DEFAULT_URL = "http://127.0.0.1:8080"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MALFORMED = ("not_json", "no_format", "bad_value", "missing_input")
_COLUMNS = [TRIP_ID, *MODEL_INPUT_COLUMNS]


class TrafficError(RuntimeError):
    """The traffic cannot be sent (no endpoint recorded or answering, bad URL)."""


@dataclass(frozen=True)
class PlannedRequest:
    """One request body, what it is, and the actual fares of its trips."""

    kind: str  # an input format, or "malformed:<how>"
    body: bytes
    fares: pd.DataFrame  # trip_id, fare_amount


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


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: trip_id an integer, inputs floats, missing inputs null."""
    return [
        {TRIP_ID: int(row[TRIP_ID])}
        | {name: None if pd.isna(row[name]) else float(row[name]) for name in MODEL_INPUT_COLUMNS}
        for row in rows.to_dict("records")
    ]


def request_body(rows: pd.DataFrame, request_format: str, client_request_id: str) -> dict[str, Any]:
    """An invocation body with `rows` in `request_format` (one of FORMATS)."""
    records = _records(rows)
    if request_format == "dataframe_split":
        data: Any = {"columns": _COLUMNS, "data": [[record[c] for c in _COLUMNS] for record in records]}
    elif request_format == "inputs":
        data = {column: [record[column] for record in records] for column in _COLUMNS}
    elif request_format in ("dataframe_records", "instances"):
        data = records
    else:
        raise ValueError(f"unknown request format '{request_format}': expected one of {FORMATS}")
    return {request_format: data, "client_request_id": client_request_id}


def malformed_body(rows: pd.DataFrame, how: str, client_request_id: str) -> bytes:
    """A body the endpoint refuses: broken JSON, no input format, a non-numeric or missing input."""
    if how == "not_json":
        return b'{"dataframe_records": [{"trip_distance": 1.5'
    records = _records(rows)
    body: dict[str, Any]
    if how == "no_format":
        body = {"data": records}
    elif how == "bad_value":
        body = {"dataframe_records": [record | {"trip_distance": "far"} for record in records]}
    elif how == "missing_input":
        body = {"dataframe_records": [{k: v for k, v in r.items() if k != "trip_distance"} for r in records]}
    else:
        raise ValueError(f"unknown malformation '{how}': expected one of {MALFORMED}")
    return json.dumps(body | {"client_request_id": client_request_id}).encode()


def plan_traffic(
    trips: pd.DataFrame, requests: int, rng: np.random.Generator, *, drift: bool, run_id: str
) -> list[PlannedRequest]:
    """`requests` requests of 1-4 random held-out trips each, formats in turn, ~3% malformed."""
    sizes = rng.integers(1, MAX_ROWS_PER_REQUEST + 1, size=requests)
    total = int(sizes.sum())
    chosen = trips.iloc[rng.choice(len(trips), size=total, replace=total > len(trips))]
    sent = drifted(chosen) if drift else chosen
    malformed = rng.random(requests) < MALFORMED_SHARE
    ends = np.cumsum(sizes)
    plan = []
    for index, (start, end) in enumerate(zip(ends - sizes, ends, strict=True)):
        rows, client_id = sent.iloc[start:end], f"{run_id}-{index}"
        if malformed[index]:
            how = MALFORMED[index % len(MALFORMED)]
            kind, body = f"malformed:{how}", malformed_body(rows, how, client_id)
        else:
            kind = FORMATS[index % len(FORMATS)]
            body = json.dumps(request_body(rows, kind, client_id)).encode()
        plan.append(PlannedRequest(kind, body, rows[[TRIP_ID, LABEL]]))
    return plan


def send_traffic(
    url: str, endpoint: str, plan: list[PlannedRequest], token: str | None = None
) -> Counter[int]:
    """POST each planned request to the endpoint's invocations; returns the count per HTTP status."""
    target = f"{check_loopback(url)}/serving-endpoints/{endpoint}/invocations"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    statuses: Counter[int] = Counter()
    for planned in plan:
        request = urllib.request.Request(target, data=planned.body, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=60) as response:
                response.read()
                statuses[response.status] += 1
        except urllib.error.HTTPError as error:
            error.read()
            statuses[error.code] += 1
        except urllib.error.URLError as error:
            raise TrafficError(
                f"no endpoint answers at {url} ({error.reason}): start `mlops serve`"
            ) from None
    return statuses


@contextmanager
def scratch_spark() -> Iterator[Any]:
    """This process's Spark session, else a new one without Hive or metastore (stopped after)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    log4j = Path(str(files("mlops_template.platform") / "log4j2.properties")).as_uri()
    with tempfile.TemporaryDirectory(prefix="mlops-scratch-") as scratch:
        spark = (
            SparkSession.builder.master("local[2]")
            .appName("mlops-simulate-traffic")
            .config("spark.sql.catalogImplementation", "in-memory")
            .config("spark.sql.warehouse.dir", scratch)
            .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j}")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate()
        )
        try:
            yield spark
        finally:
            spark.stop()


def load_held_out(state_dir: Path, population: int) -> pd.DataFrame:
    """The held-out trips of a population size, built once and cached under the local state."""
    path = state_dir / "monitoring" / f"heldout-{population}-seed{HELDOUT_SEED}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    log.info("building %d held-out trips with their features (once; cached in %s)", population, path)
    with scratch_spark() as spark:
        trips = held_out_trips(spark, population).toPandas()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    trips.to_parquet(temporary, index=False)
    os.replace(temporary, path)
    return trips


def find_endpoint(state_dir: Path, name: str | None) -> EndpointConfig:
    """The recorded endpoint named `name`, or the only one recorded."""
    configs = {config.name: config for config in load_endpoint_specs(state_dir)}
    if name is not None and name in configs:
        return configs[name]
    if name is None and len(configs) == 1:
        return next(iter(configs.values()))
    known = ", ".join(sorted(configs)) or "none: run the pipeline first, its deploy task records it"
    wanted = f"'{name}'" if name else "which one (--endpoint)"
    raise TrafficError(f"endpoint {wanted}? Endpoints recorded in {state_dir}: {known}")


def simulate_traffic(
    target: Annotated[
        str, typer.Option("--target", "-t", help="Bundle target whose local endpoint to call.")
    ],
    requests: Annotated[int, typer.Option(min=1, max=MAX_REQUESTS, help="Number of requests.")] = 200,
    drift: Annotated[bool, typer.Option(help="Shift inputs: twice the distance, evening pickups.")] = False,
    url: Annotated[str, typer.Option(help="Base URL of `mlops serve` (loopback only).")] = DEFAULT_URL,
    endpoint: Annotated[str | None, typer.Option(help="Endpoint name (default: the only one).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed choosing the trips (default: random).")] = None,
    population: Annotated[
        int, typer.Option(min=100, help="Held-out trips generated: the size of the pipeline's source.")
    ] = DEFAULT_SAMPLE_ROWS,
    token_env: Annotated[
        str | None, typer.Option(help="Send 'Authorization: Bearer' with the token in this variable.")
    ] = None,
) -> None:
    """Send held-out trips to TARGET's local endpoint and record their actual fares as ground truth."""
    token = os.environ.get(token_env, "") if token_env else None
    if token_env and not token:
        raise typer.BadParameter(
            f"environment variable {token_env} is not set or empty", param_hint="--token-env"
        )
    state_dir = LocalPlatform(target).state_dir  # its state directory only: no Spark, no metastore
    try:
        base = check_loopback(url)
        config = find_endpoint(state_dir, endpoint)
    except TrafficError as error:
        raise typer.BadParameter(str(error)) from None
    if not config.inference_table.enabled:
        log.warning(
            "endpoint %s logs no inference table: deploy it with --var inference_table_enabled=true",
            config.name,
        )
    trips = load_held_out(state_dir, population)
    run_id = f"sim-{uuid.uuid4().hex[:8]}"
    plan = plan_traffic(trips, requests, np.random.default_rng(seed), drift=drift, run_id=run_id)
    try:
        statuses = send_traffic(base, config.name, plan, token)
    except TrafficError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None
    table = config.inference_table
    ground_truth = MonitoringTables(
        table.catalog_name, table.schema_name, table.table_name_prefix
    ).ground_truth
    fares = pd.concat([planned.fares for planned in plan], ignore_index=True)
    write_ground_truth(local_ground_truth_dir(state_dir, ground_truth), fares)
    answered = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    typer.echo(
        f"Sent {len(plan)} requests ({len(fares)} trips{', drifted' if drift else ''}) to {config.name} "
        f"as {run_id}: {answered}. Actual fares written to {ground_truth}."
    )
