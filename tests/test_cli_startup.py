"""`mlops` imports only what the command run uses: help and offline validation load no Spark or MLflow.

Each case runs the `mlops` console script's entry point in a fresh interpreter (an import made by
an earlier test would hide one made at start-up) and reads the top-level packages it had loaded
when it exited.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MARK = "--- loaded packages ---"
# Runs `mlops ARGS` as the console script does; at exit, prints the packages loaded by then.
PROBE = f"""
import atexit, json, sys
from importlib.metadata import entry_points

atexit.register(lambda: print({MARK!r}, json.dumps(sorted({{m.split('.')[0] for m in sys.modules}}))))
sys.argv[0] = "mlops"
(mlops,) = entry_points(group="console_scripts", name="mlops")
mlops.load()()
"""
# What the pipeline, the local platform and the endpoint server need: no help or validation does.
HEAVY = {"pyspark", "mlflow", "pandas", "numpy", "sklearn", "scipy", "starlette", "uvicorn"}


@dataclass(frozen=True)
class Run:
    exit_code: int
    output: str
    errors: str
    packages: set[str]


def run_mlops(*arguments: str) -> Run:
    """`mlops ARGUMENTS` in a fresh interpreter from the project root."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    output, mark, packages = result.stdout.rpartition(MARK)
    assert mark, f"mlops {' '.join(arguments)} did not reach exit: {result.stderr}"
    return Run(result.returncode, output, result.stderr, set(json.loads(packages)))


def test_help_lists_every_command_and_imports_nothing_heavy() -> None:
    """Nor the pipeline package: a broken problem module (data, features, spec) cannot break `mlops`."""
    run = run_mlops("--help")
    assert run.exit_code == 0, run.errors
    listed = {line.split()[0] for line in run.output.partition("Commands:")[2].splitlines() if line.strip()}
    assert listed >= {
        "bundle",
        "data",
        "model",
        "monitor",
        "serve",
        "simulate-traffic",
        "doctor",
        "run",
        "rollout",
    }
    unexpected = run.packages & (HEAVY | {"yaml", "jsonschema", "databricks", "mlops_template"})
    assert not unexpected, f"mlops --help imported {sorted(unexpected)}"


@pytest.mark.parametrize(
    ("command", "default"),
    [("serve", "default: 8080"), ("simulate-traffic", "default: 20000"), ("rollout report", "--target")],
)
def test_command_help_shows_its_options_and_imports_nothing_heavy(command: str, default: str) -> None:
    run = run_mlops(*command.split(), "--help")
    assert run.exit_code == 0, run.errors
    assert "--target" in run.output and default in run.output
    unexpected = run.packages & HEAVY
    assert not unexpected, f"imported {sorted(unexpected)}"


def test_bundle_validate_loads_no_spark_or_mlflow() -> None:
    run = run_mlops("bundle", "validate", "-t", "dev")
    assert run.exit_code == 0, run.errors
    assert "is valid for target dev" in run.output
    unexpected = run.packages & HEAVY
    assert not unexpected, f"imported {sorted(unexpected)}"
