"""Throughput and latency of the local endpoint (`mlops serve`) vs `mlflow models serve`.

Both serve the same registered model from a throw-away local state, each in its own process on a
loopback port (`mlflow models serve --env-manager local`), and get the same one-row JSON requests
from 1, 8 and 32 concurrent keep-alive clients, a bounded number of requests per level. The model
is the problem spec's (`load_problem()`; `$MLOPS_PROBLEM` selects another spec), trained on a
small training set of its sample data on local Spark; the request is one row of its inputs.

    .venv/bin/python benchmarks/serving.py [--requests 600] [--clients 1 8 32]

Not part of the test suite. The client runs on the same machine, so absolute figures are a lower
bound; the ratio is the point.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from sample_data import register_model, sample_training_set

from mlops_laptop.platform.local import LocalPlatform
from mlops_laptop.serving.local_host import local_host
from mlops_template.platform import activated
from mlops_template.problem_spec import load_problem
from mlops_template.serving.deploy import DatabricksEndpointDeployer
from mlops_template.serving.spec import InferenceTableSpec, endpoint_config
from mlops_template.training.model import model_input

MODEL = "bench.serving.model"
ENDPOINT = "model-bench"
TRAINING_SCHEMA = "bench.training"
TRAINING_ROWS = 20_000
SERVE = "import typer; from mlops_laptop.serving.cli import serve_command; typer.run(serve_command)"


def register_spec_model(platform: LocalPlatform) -> tuple[str, pd.DataFrame]:
    """The spec's model registered in the benchmark's local registry: its version and one input row."""
    spec = load_problem()
    with activated(platform):
        training_set = sample_training_set(platform, spec, TRAINING_SCHEMA, TRAINING_ROWS, seed=1)
        version = register_model(platform, spec, MODEL, training_set, TRAINING_SCHEMA)
        request = model_input(training_set, spec).limit(1).toPandas()
    platform.stop()  # the servers run in their own processes
    return str(version), request


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


def load(port: int, path: str, body: bytes, clients: int, requests: int) -> tuple[float, float, float]:
    """Requests/s, p50 and p95 latency (ms) of `requests` POSTs from `clients` keep-alive clients."""
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [requests]
    failures = [0]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            start = time.perf_counter()
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                failures[0] += response.status != 200

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures[0]:
        raise RuntimeError(f"{failures[0]} requests failed on port {port}")
    ordered = sorted(latencies)
    return requests / wall, statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def _figures(result: tuple[float, float, float]) -> str:
    rate, p50, p95 = result
    return f"{rate:>7.0f} req/s {p50:>6.1f} / {p95:>6.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per server and concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--omp-threads",
        default="1",
        help="OMP_NUM_THREADS of both servers (one-row predictions gain nothing from OpenMP threads, "
        "and their spin-waiting skews results on a small shared machine)",
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as home:
        platform = LocalPlatform("bench", Path(home))
        platform.configure_mlflow()
        version, request = register_spec_model(platform)
        table = InferenceTableSpec(
            enabled=True, catalog_name="bench", schema_name="serving", table_name_prefix="model"
        )
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
                    inference_table=table,
                    git_sha="bench",
                ),
            )
        env = os.environ | {
            "MLOPS_HOME": home,
            "MLFLOW_TRACKING_URI": platform.tracking_uri,
            "MLFLOW_REGISTRY_URI": platform.tracking_uri,
            "OMP_NUM_THREADS": args.omp_threads,
            # `mlflow models serve` starts `uvicorn` from PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        ours_port, mlflow_port = _free_port(), _free_port()
        ours_command = [sys.executable, "-c", SERVE, "-t", "bench", "--port", str(ours_port)]
        mlflow_command = [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/{version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
        ]
        body = json.dumps(
            {"dataframe_split": json.loads(request.to_json(orient="split", index=False))}
        ).encode()
        ours_path = f"/serving-endpoints/{ENDPOINT}/invocations"
        with (
            started(ours_command, env, ours_port, Path(home, "ours.log")),
            started(mlflow_command, env, mlflow_port, Path(home, "mlflow.log")),
        ):
            load(ours_port, ours_path, body, 4, 50)  # warm up both
            load(mlflow_port, "/invocations", body, 4, 50)
            print(f"{args.requests} one-row requests per level; latency p50 / p95 in ms")
            print(f"{'clients':>7} | {'local endpoint':>26} | {'mlflow models serve':>26} | {'ratio':>5}")
            for clients in args.clients:
                ours = load(ours_port, ours_path, body, clients, args.requests)
                theirs = load(mlflow_port, "/invocations", body, clients, args.requests)
                print(f"{clients:>7} | {_figures(ours)} | {_figures(theirs)} | {ours[0] / theirs[0]:>5.2f}")


if __name__ == "__main__":
    main()
