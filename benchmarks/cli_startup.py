"""Start-up of the `mlops` CLI vs `python -c "import typer, rich"`.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 9]

Each command runs `--repeat` times in a fresh process, interleaved so that the machine's load
falls on all of them alike, after one untimed warm-up run each (bytecode compiled, files cached);
the median wall time is reported. Goal: `mlops --help` within 2x the baseline. `mlops bundle
validate -t dev` also reads and checks databricks.yml (YAML, JSON schema, bundle dataclasses).

Not part of the test suite; tests/test_cli_startup.py checks what these commands import instead.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MLOPS = str(Path(sysconfig.get_path("scripts")) / "mlops")
BASELINE = "python -c 'import typer, rich'"
COMMANDS = {
    BASELINE: [sys.executable, "-c", "import typer, rich"],
    "mlops --help": [MLOPS, "--help"],
    "mlops bundle validate -t dev": [MLOPS, "bundle", "validate", "-t", "dev"],
}
GOAL = 2.0


def seconds(command: list[str]) -> float:
    """Wall time of one run of `command` from the project root; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, cwd=PROJECT_ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per command")
    arguments = parser.parse_args()
    for command in COMMANDS.values():
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(arguments.repeat):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    baseline = statistics.median(times[BASELINE])
    print(f"{'command':<32} | {'median s':>8} | {'min s':>6} | {'ratio':>5}")
    print(f"{'-' * 32}-+-{'-' * 8}-+-{'-' * 6}-+-{'-' * 5}")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:<32} | {median:8.3f} | {min(runs):6.3f} | {median / baseline:5.2f}")
    ratio = statistics.median(times["mlops --help"]) / baseline
    print(f"\nmlops --help / baseline = {ratio:.2f} (goal <= {GOAL:g}), median of {arguments.repeat} runs")


if __name__ == "__main__":
    main()
