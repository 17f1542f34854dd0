"""Benchmark the features task (feature computation + feature-table writes) on local Spark.

    .venv/bin/python benchmarks/features.py [--rows 1000000 10000000] [--training-set]

The problem spec is `load_problem()`'s (`$MLOPS_PROBLEM` selects another one). After an untimed
warm-up run, for each size it generates that many source rows with the spec's `sample_source`
and saves them cleaned by its `prepare` (not timed), then times the features task's own `run`
(every feature table of the spec computed and written through the local feature store, row
counts). With `--training-set` it also times building the point-in-time training set over all
those rows. The goal is linear scaling: seconds(largest) / seconds(smallest) <= rows ratio.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sample_data import prepare_sample, write_features

from mlops_laptop.platform.local import LocalPlatform
from mlops_template.problem_spec import ProblemSpec, load_problem
from mlops_template.training.dataset import build_training_set

WARM_UP_ROWS = 10_000  # a first untimed run, so JVM start-up costs do not count for the first size


def _seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _schema(rows: int) -> str:
    """One schema per size: the pipeline's tables are named by the problem spec."""
    return f"bench.rows_{rows}"


def _build_training_set(platform: LocalPlatform, spec: ProblemSpec, rows: int) -> None:
    prepared = platform.read_table(spec.prepared_table_name(_schema(rows)))
    training = build_training_set(platform, spec, prepared, _schema(rows))
    training.write.format("noop").mode("overwrite").save()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--shuffle-partitions",
        type=int,
        default=2 * (os.cpu_count() or 2),
        help="feature frames are small (entities x windows): a few partitions per core is enough",
    )
    parser.add_argument(
        "--training-set", action="store_true", help="also time the point-in-time training set"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = load_problem()

    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as state:
        platform = LocalPlatform("bench", Path(state), shuffle_partitions=args.shuffle_partitions)
        results: list[tuple[int, float, float | None]] = []
        try:
            for index, rows in enumerate([WARM_UP_ROWS, *args.rows]):
                prepare_sample(platform, spec, _schema(rows), rows, seed=42)
                features = _seconds(lambda rows=rows: write_features(platform, _schema(rows)))
                training = (
                    _seconds(lambda rows=rows: _build_training_set(platform, spec, rows))
                    if args.training_set
                    else None
                )
                if index == 0:
                    continue
                results.append((rows, features, training))
                print(f"{rows:>12,} rows: features {features:8.1f} s", flush=True)
        finally:
            platform.stop()

    base_rows, base_features, base_training = results[0]
    print(f"\n{'rows':>12} | {'features s':>10} | {'ratio':>6} | {'training set s':>14} | {'ratio':>6}")
    print(f"{'-' * 12}-+-{'-' * 10}-+-{'-' * 6}-+-{'-' * 14}-+-{'-' * 6}")
    for rows, features, training in results:
        training_cells = (
            f"{training:14.1f} | {training / base_training:6.2f}"
            if training is not None and base_training
            else f"{'-':>14} | {'-':>6}"
        )
        print(f"{rows:>12,} | {features:10.1f} | {features / base_features:6.2f} | {training_cells}")
    print(f"\nrows ratio {results[-1][0] / base_rows:.0f}x (linear scaling: time ratio <= rows ratio)")


if __name__ == "__main__":
    main()
