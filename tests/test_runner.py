"""The local job runner on real entry points: order, conditions, run_if, task values, failures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_template.bundle.runner import (
    JobDefinitionError,
    LocalJobRunner,
    TaskStatus,
    evaluate_condition,
)
from mlops_template.platform import activated
from mlops_template.platform.local import LocalPlatform


@pytest.fixture(scope="module")
def runner_tasks_installed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Install entry points of tests/runner_tasks.py as the distribution `runner_tasks`."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "runner_tasks-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runner_tasks\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text(
        "[console_scripts]\nrt-record = runner_tasks:record\nrt-fail = runner_tasks:fail\n"
        "rt-exit = runner_tasks:exit_nonzero\n"
    )
    sys.path.append(str(site))
    yield
    sys.path.remove(str(site))


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runner.log"
    monkeypatch.setenv("RUNNER_LOG", str(path))
    return path


@pytest.fixture
def local(tmp_path: Path) -> LocalPlatform:
    """A platform whose Spark is never started: these jobs do not touch tables."""
    with activated(LocalPlatform("runner", tmp_path)) as platform:
        yield platform


def wheel(key: str, entry: str = "rt-record", *args: str, **extra: Any) -> dict[str, Any]:
    task = {
        "task_key": key,
        "python_wheel_task": {
            "package_name": "runner_tasks",
            "entry_point": entry,
            "parameters": [f"--name={key}", *args],
        },
    }
    return {**task, **extra}


def run(local: LocalPlatform, jobs: dict[str, Any], job: str = "job", **params: str):
    runner = LocalJobRunner(jobs, local.task_values, local.state_dir / "runs")
    return runner.run(job, params)


def logged_tasks(log_file: Path) -> list[str]:
    return [line.split(" ", 1)[0] for line in log_file.read_text().splitlines()]


pytestmark = pytest.mark.usefixtures("runner_tasks_installed")


def test_tasks_run_in_dependency_order_with_job_parameters(local, log_file):
    job = {
        "parameters": [{"name": "day", "default": "2016-01-01"}],
        "tasks": [
            wheel("c", depends_on=[{"task_key": "b"}]),
            wheel(
                "b",
                "rt-record",
                "--day={{job.parameters.day}}",
                "--run={{job.run_id}}",
                depends_on=[{"task_key": "a"}],
            ),
            wheel("a"),
        ],
    }
    result = run(local, {"job": job}, day="2016-02-03")
    assert result.succeeded
    assert logged_tasks(log_file) == ["a", "b", "c"]
    assert f"('day', '2016-02-03'), ('name', 'b'), ('run', '{result.run_id}')" in log_file.read_text()


def test_run_ids_increase_and_runs_are_recorded(local, log_file):
    jobs = {"job": {"tasks": [wheel("a")]}}
    first, second = run(local, jobs), run(local, jobs)
    assert second.run_id == first.run_id + 1
    assert (local.state_dir / "runs" / f"{second.run_id}.json").read_text().count('"SUCCESS"') == 1


def test_task_values_feed_a_condition_and_its_outcome_gates_dependents(local, log_file):
    job = {
        "tasks": [
            wheel("check", "rt-record", "--set-passed=yes", "--set-score=7"),
            {
                "task_key": "gate",
                "depends_on": [{"task_key": "check"}],
                "condition_task": {
                    "op": "GREATER_THAN",
                    "left": "{{tasks.check.values.score}}",
                    "right": "5",
                },
            },
            wheel(
                "deploy",
                "rt-record",
                "--flag={{tasks.check.values.passed}}",
                depends_on=[{"task_key": "gate", "outcome": "true"}],
            ),
            wheel("alert", depends_on=[{"task_key": "gate", "outcome": "false"}]),
            wheel("after_alert", depends_on=[{"task_key": "alert"}]),
        ]
    }
    result = run(local, {"job": job})
    assert result.succeeded
    assert result.task("gate").outcome == "true"
    assert result.task("check").values == {"passed": "yes", "score": 7}
    assert result.task("alert").status == TaskStatus.EXCLUDED
    assert result.task("after_alert").status == TaskStatus.EXCLUDED
    assert logged_tasks(log_file) == ["check", "deploy"]
    assert "('flag', 'yes')" in log_file.read_text()


def test_a_failing_task_stops_its_dependents_but_not_all_done_ones(local, log_file):
    job = {
        "tasks": [
            wheel("ok"),
            wheel("broken", "rt-fail", depends_on=[{"task_key": "ok"}]),
            wheel("downstream", depends_on=[{"task_key": "broken"}]),
            wheel("further", depends_on=[{"task_key": "downstream"}]),
            wheel("cleanup", depends_on=[{"task_key": "broken"}], run_if="ALL_DONE"),
            wheel("on_failure", depends_on=[{"task_key": "broken"}], run_if="AT_LEAST_ONE_FAILED"),
        ]
    }
    result = run(local, {"job": job})
    assert not result.succeeded
    statuses = {t.task_key: t.status for t in result.tasks}
    assert statuses == {
        "ok": TaskStatus.SUCCESS,
        "broken": TaskStatus.FAILED,
        "downstream": TaskStatus.UPSTREAM_FAILED,
        "further": TaskStatus.UPSTREAM_FAILED,
        "cleanup": TaskStatus.SUCCESS,
        "on_failure": TaskStatus.SUCCESS,
    }
    assert "the task failed on purpose" in result.task("broken").error
    assert logged_tasks(log_file) == ["ok", "cleanup", "on_failure"]


def test_nonzero_exit_fails_the_task(local, log_file):
    result = run(local, {"job": {"tasks": [wheel("a", "rt-exit")]}})
    assert result.task("a").status == TaskStatus.FAILED
    assert "exited with 3" in result.task("a").error


def test_run_job_task_runs_the_other_job(local, log_file):
    jobs = {
        "parent": {
            "tasks": [
                {"task_key": "trigger", "run_job_task": {"job_id": "child", "job_parameters": {"x": "9"}}}
            ]
        },
        "child": {
            "parameters": [{"name": "x", "default": "1"}],
            "tasks": [wheel("inner", "rt-record", "--x={{job.parameters.x}}")],
        },
    }
    result = run(local, jobs, job="parent")
    assert result.succeeded
    assert "('x', '9')" in log_file.read_text()


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"tasks": [{"task_key": "nb", "notebook_task": {"notebook_path": "x"}}]}, "notebook_task"),
        ({"tasks": [{**wheel("a"), "task_kye": "oops"}]}, "task_kye"),
        ({"tasks": [wheel("a", depends_on=[{"task_key": "ghost"}])]}, "ghost"),
        (
            {
                "tasks": [
                    wheel("a", depends_on=[{"task_key": "b"}]),
                    wheel("b", depends_on=[{"task_key": "a"}]),
                ]
            },
            "cycle",
        ),
        ({"tasks": [wheel("a")], "continuous": {}}, "continuous"),
    ],
)
def test_unsupported_or_inconsistent_jobs_are_errors_naming_the_key(local, log_file, job, message):
    with pytest.raises(JobDefinitionError, match=message):
        run(local, {"job": job})
    assert not log_file.exists()


def test_unknown_job_and_unknown_parameter_are_errors(local):
    jobs = {"job": {"parameters": [{"name": "day", "default": "x"}], "tasks": [wheel("a")]}}
    with pytest.raises(JobDefinitionError, match="unknown job 'nope'"):
        run(local, jobs, job="nope")
    with pytest.raises(JobDefinitionError, match=r"no parameter \['dya'\]"):
        run(local, jobs, dya="1")


def test_bad_references_fail_the_task_naming_the_reference(local, log_file):
    job = {
        "tasks": [
            wheel("a"),
            wheel("b", "rt-record", "--v={{tasks.a.values.missing}}", depends_on=[{"task_key": "a"}]),
        ]
    }
    result = run(local, {"job": job})
    assert result.task("b").status == TaskStatus.FAILED
    assert "did not set" in result.task("b").error and "missing" in result.task("b").error


@pytest.mark.parametrize(
    ("op", "left", "right", "expected"),
    [
        ("EQUAL_TO", "true", "true", True),
        ("NOT_EQUAL", "a", "b", True),
        ("GREATER_THAN", "10", "9", True),  # numeric, not lexicographic
        ("LESS_THAN_OR_EQUAL", "2.5", "2.50", True),
        ("EQUAL_TO", "1.0", "1", True),
    ],
)
def test_condition_comparisons(op, left, right, expected):
    assert evaluate_condition(op, left, right) is expected


def test_ordering_comparison_of_text_is_an_error():
    with pytest.raises(JobDefinitionError, match="needs numbers"):
        evaluate_condition("GREATER_THAN", "abc", "1")
