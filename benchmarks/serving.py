"""Serving-time feature lookup and the local endpoint (`mlops serve`) vs `mlflow models serve`.

The problem spec's model (`load_problem()`; `$MLOPS_PROBLEM` selects another spec), trained on a
small training set of its sample data on local Spark, is logged with its feature lookups (as task
`train` with `serving_features=lookup`), its feature tables published to the local online store
(task `publish_features`), and deployed as task `deploy` does (`ENABLE_FEATURE_TRACING=true`, so
the inference table logs what was looked up). Requests are one-row JSON requests of trips whose
lookup times fall just after the latest published row of their keys, so their features are found.

In the same run the local endpoint gets two kinds of request for the same rows: the request inputs
alone (the endpoint looks the features up in the online snapshot) and every model input (features
sent explicitly, overriding the lookup); `mlflow models serve` (`--env-manager local`, its own
process) gets the latter. Each kind comes from 1, 8 and 32 concurrent keep-alive clients, a bounded
number of requests per level, the kinds interleaved in rounds so they share the machine's load.
The issue's goals: the lookup adds <= 1 ms at p50 with 1 client and keeps >= 80% of the
throughput at 32 clients.

    .venv/bin/python benchmarks/serving.py [--requests 600] [--clients 1 8 32] [--skip-mlflow]

Not part of the test suite. The client runs on the same machine, so absolute figures are a lower
bound; the ratios are the point.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sample_data import publish_feature_tables, register_model, sample_training_set

from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.platform.warehouse import local_table_dir
from mlops_laptop.serving.local_host import local_host
from mlops_template.platform import activated
from mlops_template.platform.feature_store import LookupSpec
from mlops_template.problem_spec import ProblemSpec, load_problem
from mlops_template.serving.deploy import DatabricksEndpointDeployer
from mlops_template.serving.spec import InferenceTableSpec, endpoint_config
from mlops_template.tasks.deploy import FEATURE_TRACING
from mlops_template.training.dataset import build_feature_set
from mlops_template.training.model import model_input

MODEL = "bench.serving.model"
ENDPOINT = "model-bench"
TRAINING_SCHEMA = "bench.training"
TRAINING_ROWS = 20_000
ONLINE_STORE = "bench-online"
INFERENCE_TABLE = InferenceTableSpec(
    enabled=True, catalog_name="bench", schema_name="serving", table_name_prefix="model"
)
PAYLOAD_TABLE = "bench.serving.model_payload"
SERVE = "import typer; from mlops_laptop.serving.cli import serve_command; typer.run(serve_command)"
P50_GOAL_MS = 1.0  # at most this much added by the lookup at p50 with one client
THROUGHPUT_GOAL = 0.80  # at least this share of the throughput at 32 clients


@dataclass(frozen=True)
class Requests:
    """One-row request bodies for the same rows: request inputs only, and every model input."""

    lookup: list[bytes]
    features: list[bytes]


@dataclass(frozen=True)
class Target:
    """A server route and the bodies its clients send, in turn."""

    name: str
    port: int
    path: str
    bodies: Sequence[bytes]


@dataclass(frozen=True)
class Figures:
    """Requests/s and p50 / p95 latency (ms) of one kind of request at one concurrency level."""

    rate: float
    p50: float
    p95: float

    def __str__(self) -> str:
        return f"{self.rate:>6.0f} req/s {self.p50:>6.1f} / {self.p95:>6.1f}"


def request_rows(platform: LocalPlatform, spec: ProblemSpec, schema: str, count: int, seed: int) -> DataFrame:
    """The request inputs of `count` prepared rows, each lookup time moved to one second after the
    latest row of its keys in the feature table (what `publish_features` published), so the
    lookups find their rows; a row whose key has none keeps its time (and gets the defaults)."""
    lookups = [LookupSpec.of(lookup) for lookup in spec.feature_lookups(spec.feature_table_names(schema))]
    keys = sorted({key for lookup in lookups for key in lookup.lookup_key})
    rows = (
        platform.read_table(spec.prepared_table_name(schema))
        .select(*spec.request_input_names)
        .dropna(subset=keys)
        .orderBy(F.rand(seed))
        .limit(count)
    )
    newest: dict[str, list[str]] = {}  # lookup time column -> latest-row columns of its lookups
    for number, lookup in enumerate(lookups):
        if lookup.timestamp_lookup_key is None:
            continue
        table = platform.feature_store.get_table(lookup.table_name)
        latest = (
            platform.read_table(lookup.table_name)
            .groupBy(*[F.col(e).alias(k) for e, k in zip(table.entity_keys, lookup.lookup_key, strict=True)])
            .agg(F.max(table.timestamp_key).alias(f"_latest_{number}"))
        )
        rows = rows.join(latest, on=list(lookup.lookup_key), how="left")
        newest.setdefault(lookup.timestamp_lookup_key, []).append(f"_latest_{number}")
    for column, latest_columns in newest.items():
        latest_time = F.greatest(*latest_columns) if len(latest_columns) > 1 else F.col(latest_columns[0])
        rows = rows.withColumn(column, F.coalesce(latest_time + F.expr("INTERVAL 1 SECOND"), F.col(column)))
    return rows.select(*spec.request_input_names)


def one_row_bodies(frame: pd.DataFrame) -> list[bytes]:
    """One `dataframe_split` body per row; times as ISO-8601 text (naive UTC), nulls as null."""
    frame = frame.copy()
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].map(lambda value: None if pd.isna(value) else value.isoformat())
    return [
        json.dumps(
            {"dataframe_split": json.loads(frame.iloc[[row]].to_json(orient="split", index=False))}
        ).encode()
        for row in range(len(frame))
    ]


def prepare(platform: LocalPlatform, distinct_rows: int) -> tuple[str, Requests]:
    """The spec's model trained, logged with its lookups and registered, its feature tables
    published; its version and the request bodies."""
    spec = load_problem()
    with activated(platform):
        training_set = sample_training_set(platform, spec, TRAINING_SCHEMA, TRAINING_ROWS, seed=1)
        version = register_model(platform, spec, MODEL, training_set, TRAINING_SCHEMA, feature_lookups=True)
        publish_feature_tables(platform, TRAINING_SCHEMA, ONLINE_STORE)
        rows = request_rows(platform, spec, TRAINING_SCHEMA, distinct_rows, seed=2)
        # the features sent explicitly: the point-in-time lookup as of each row, as the endpoint's
        frame = model_input(build_feature_set(platform, spec, rows, TRAINING_SCHEMA), spec).toPandas()
    platform.stop()  # the servers run in their own processes
    return str(version), Requests(one_row_bodies(frame[spec.request_input_names]), one_row_bodies(frame))


def deploy(platform: LocalPlatform, version: str) -> None:
    """The endpoint serving `version`, as task deploy does with `serving_features=lookup`."""
    with local_host(platform.state_dir) as host:  # the deploy, through the local control plane
        DatabricksEndpointDeployer(host.workspace_client()).deploy(
            endpoint_config(
                endpoint_name=ENDPOINT,
                model_name=MODEL,
                champion_version=version,
                challenger_version=None,
                challenger_traffic_percent=0,
                workload_size="Small",
                scale_to_zero=True,
                inference_table=INFERENCE_TABLE,
                git_sha="bench",
                environment_vars=FEATURE_TRACING,
            ),
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def started(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[int]:
    """A server subprocess, until it answers GET /ping on `port`."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[:3]} did not start:\n{log.read_text()[-3000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def load(target: Target, clients: int, requests: int) -> tuple[list[float], float]:
    """The latencies (s) of `requests` POSTs from `clients` keep-alive clients, the bodies sent in
    turn, and the wall time they took."""
    latencies: list[float] = []
    lock = threading.Lock()
    sent = [0]
    failures: list[bytes] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
        while True:
            with lock:
                if sent[0] == requests:
                    return
                body = target.bodies[sent[0] % len(target.bodies)]
                sent[0] += 1
            start = time.perf_counter()
            status, answer = _post(connection, target.path, body)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    failures.append(answer)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} requests to {target.name} failed, e.g. {failures[0][:500]!r}")
    return latencies, wall


def measure(targets: Sequence[Target], clients: int, requests: int, rounds: int) -> dict[str, Figures]:
    """`requests` per target from `clients` clients, in `rounds` rounds that take the targets in
    turn (reversed every other round), so each sees the machine's load alike."""
    latencies: dict[str, list[float]] = {target.name: [] for target in targets}
    seconds = dict.fromkeys(latencies, 0.0)
    for number in range(rounds):
        share = requests // rounds + (number < requests % rounds)
        for target in targets if number % 2 == 0 else reversed(targets):
            taken, wall = load(target, clients, share)
            latencies[target.name] += taken
            seconds[target.name] += wall
    return {
        name: Figures(
            len(taken) / seconds[name],
            statistics.median(taken) * 1000,
            sorted(taken)[int(0.95 * (len(taken) - 1))] * 1000,
        )
        for name, taken in latencies.items()
    }


def matching_predictions(port: int, path: str, requests: Requests) -> int:
    """How many rows get the same prediction with their features looked up as sent explicitly."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    same = 0
    for lookup, features in zip(requests.lookup, requests.features, strict=True):
        answers = [_post(connection, path, body) for body in (lookup, features)]
        if any(status != 200 for status, _ in answers):
            raise RuntimeError(f"a check request failed: {answers}")
        looked_up, sent = (json.loads(answer)["predictions"] for _, answer in answers)
        same += all(
            math.isclose(a, b, rel_tol=1e-9) for a, b in zip(_flat(looked_up), _flat(sent), strict=True)
        )
    return same


def _flat(values: object) -> list[float]:
    return [x for value in values for x in _flat(value)] if isinstance(values, list) else [float(values)]


def defaulted_share(state_dir: Path, looked_up: Sequence[str]) -> tuple[int, int, int]:
    """From the endpoint's inference table, over the answered requests that did not send the
    looked-up inputs: requests, looked-up values, and values defaulted (no usable row)."""
    requests = values = defaulted = 0
    for part in sorted(local_table_dir(state_dir, PAYLOAD_TABLE).glob("part-*.parquet")):
        table = pq.read_table(part, columns=["status_code", "request", "response"]).to_pylist()
        for record in table:
            if record["status_code"] != 200:
                continue
            request = json.loads(record["request"])["dataframe_split"]
            if set(looked_up) <= set(request["columns"]):
                continue  # the features were sent
            trace = json.loads(record["response"]).get("databricks_output", {}).get("feature_lookup")
            if trace is None:
                raise RuntimeError("the inference table holds no feature_lookup: is feature tracing on?")
            requests += 1
            values += len(trace["columns"]) * len(trace["data"])
            defaulted += sum(len(names) for names in trace["defaulted"])
    return requests, values, defaulted


def _goal(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per kind and concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per concurrency level")
    parser.add_argument("--distinct-rows", type=int, default=64, help="distinct request rows, sent in turn")
    parser.add_argument("--skip-mlflow", action="store_true", help="leave `mlflow models serve` out")
    parser.add_argument(
        "--omp-threads",
        default="1",
        help="OMP_NUM_THREADS of both servers (one-row predictions gain nothing from OpenMP threads, "
        "and their spin-waiting skews results on a small shared machine)",
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    spec = load_problem()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as home:
        platform = LocalPlatform("bench", Path(home))
        platform.configure_mlflow()
        version, requests = prepare(platform, args.distinct_rows)
        deploy(platform, version)
        env = os.environ | {
            "MLOPS_HOME": home,
            "MLFLOW_TRACKING_URI": platform.tracking_uri,
            "MLFLOW_REGISTRY_URI": platform.tracking_uri,
            "OMP_NUM_THREADS": args.omp_threads,
            # `mlflow models serve` starts `uvicorn` from PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        ours_port, mlflow_port = _free_port(), _free_port()
        ours_path = f"/serving-endpoints/{ENDPOINT}/invocations"
        targets = [
            Target("sent", ours_port, ours_path, requests.features),
            Target("lookup", ours_port, ours_path, requests.lookup),
        ]
        with ExitStack() as servers:
            ours = [sys.executable, "-c", SERVE, "-t", "bench", "--port", str(ours_port)]
            servers.enter_context(started(ours, env, ours_port, Path(home, "ours.log")))
            if not args.skip_mlflow:
                theirs = [str(Path(sys.executable).with_name("mlflow")), "models", "serve"]
                theirs += ["-m", f"models:/{MODEL}/{version}", "--env-manager", "local"]
                theirs += ["-h", "127.0.0.1", "-p", str(mlflow_port)]
                servers.enter_context(started(theirs, env, mlflow_port, Path(home, "mlflow.log")))
                targets.append(Target("mlflow", mlflow_port, "/invocations", requests.features))
            same = matching_predictions(ours_port, ours_path, requests)
            for target in targets:
                load(target, 4, 50)  # warm up
            load_before = os.getloadavg()[0]
            results = {
                clients: measure(targets, clients, args.requests, args.rounds) for clients in args.clients
            }
        # after the endpoint stopped, which flushes its inference table
        defaults = defaulted_share(platform.state_dir, spec.looked_up_inputs)
    report(args, results, same, len(requests.lookup), defaults, load_before)


def report(
    args: argparse.Namespace,
    results: dict[int, dict[str, Figures]],
    same: int,
    rows: int,
    defaults: tuple[int, int, int],
    load_before: float,
) -> None:
    """The table of figures, the goals and the checks."""
    print(
        f"{args.requests} one-row requests per kind and level ({rows} distinct rows, {args.rounds} "
        f"interleaved rounds); latency p50 / p95 in ms; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    header = (
        f"{'clients':>7} | {'local: features sent':>27} | {'local: features looked up':>27} | lookup/sent"
    )
    if not args.skip_mlflow:
        header += f" | {'mlflow models serve (sent)':>27} | local/mlflow"
    print(header)
    for clients, figures in results.items():
        sent, lookup = figures["sent"], figures["lookup"]
        line = f"{clients:>7} | {sent} | {lookup} | {lookup.rate / sent.rate:>11.2f}"
        if not args.skip_mlflow:
            line += f" | {figures['mlflow']} | {sent.rate / figures['mlflow'].rate:>12.2f}"
        print(line)
    if 1 in results:
        added = results[1]["lookup"].p50 - results[1]["sent"].p50
        met = _goal(added <= P50_GOAL_MS)
        print(f"lookup p50 - sent p50, 1 client:      {added:+.2f} ms (goal <= {P50_GOAL_MS:g} ms): {met}")
    if 32 in results:
        kept = results[32]["lookup"].rate / results[32]["sent"].rate
        met = _goal(kept >= THROUGHPUT_GOAL)
        print(f"lookup / sent throughput, 32 clients: {kept:.2f} (goal >= {THROUGHPUT_GOAL:.2f}): {met}")
    requests, values, defaulted = defaults
    share = defaulted / values if values else float("nan")
    print(
        f"looked-up values defaulted (inference table): {defaulted} of {values} ({share:.1%}) in "
        f"{requests} requests; same prediction looked up as sent: {same} of {rows} rows"
    )


if __name__ == "__main__":
    main()
