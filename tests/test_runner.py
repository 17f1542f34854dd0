"""The local job runner on real entry points and notebooks: order, conditions, run_if, task values,
parameter pushdown, failures; and the jobs of the real bundle as the runner sees them."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from loopback import loopback_workspace
from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.bundle.local_dbutils import LocalWidgets
from mlops_laptop.bundle.runner import (
    JobDefinitionError,
    LocalJobRunner,
    TaskStatus,
    evaluate_condition,
)
from mlops_laptop.platform.local import LocalPlatform
from mlops_template.platform import activated
from mlops_template.platform.task_values import DatabricksTaskValues, TaskValuesUnavailableError
from mlops_template.tasks.common import config_from_widgets
from mlops_template.tasks.monitor_check import MonitorCheckConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
    """Run `job`; notebook paths are relative to a (virtual) job file in the state directory."""
    files = {key: local.state_dir / f"{key}.job.yml" for key in jobs}
    runner = LocalJobRunner(jobs, local.task_values, local.state_dir / "runs", job_files=files)
    return runner.run(job, params)


def write_notebook(local: LocalPlatform, name: str, *cells: str) -> str:
    """A Databricks source notebook beside the job files; returns its relative notebook_path."""
    path = local.state_dir / "notebooks" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Databricks notebook source\n" + "\n\n# COMMAND ----------\n\n".join(cells) + "\n")
    return f"./notebooks/{name}.py"


# A notebook that logs its widgets `name` and `day` and sets the values of widget `values`
# (JSON object) with dbutils.jobs.taskValues.set.
RECORDING_CELL = """
import json, os
from pathlib import Path

dbutils.widgets.text("day", "declared-default")
with Path(os.environ["RUNNER_LOG"]).open("a") as log:
    log.write(f"{dbutils.widgets.get('name')} day={dbutils.widgets.get('day')}\\n")
for key, value in json.loads(dbutils.widgets.get("values")).items():
    dbutils.jobs.taskValues.set(key=key, value=value)
"""


def notebook_task(local: LocalPlatform, key: str, values: str = "{}", **extra: Any) -> dict[str, Any]:
    path = write_notebook(local, "recording", "# MAGIC %pip install ../dist/*.whl --quiet", RECORDING_CELL)
    spec = {"notebook_path": path, "base_parameters": {"name": key, "values": values}}
    return {"task_key": key, "notebook_task": spec, **extra}


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
    """A notebook task sets values (https://docs.databricks.com/jobs/task-values.html); a
    condition task and a later task's parameters read them as `{{tasks.KEY.values.NAME}}`."""
    job = {
        "tasks": [
            notebook_task(local, "check", '{"passed": "yes", "score": 7}'),
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


def test_a_wheel_task_setting_a_task_value_fails_as_databricks_allows_it_only_in_notebooks(local, log_file):
    """`dbutils.jobs.taskValues.set` is available only in Python notebooks
    (https://docs.databricks.com/jobs/task-values.html): a wheel task that sets one fails."""
    result = run(local, {"job": {"tasks": [wheel("a", "rt-record", "--set-score=7")]}})
    assert result.task("a").status == TaskStatus.FAILED
    assert "python_wheel_task" in result.task("a").error
    assert "only Python notebook tasks set task values" in result.task("a").error
    assert result.task("a").values == {}


def test_notebook_widgets_get_base_parameters_overridden_by_job_parameters(local, log_file):
    """Job parameters are pushed down to notebook tasks as widgets and win over the task's own
    parameter of the same key (https://docs.databricks.com/jobs/job-parameters.html, "Job
    parameter pushdown"); a declared widget without a parameter has its default."""
    job = {
        "parameters": [{"name": "day", "default": "2016-01-01"}],
        "tasks": [
            {
                **notebook_task(local, "with_day"),
                "notebook_task": {
                    "notebook_path": write_notebook(local, "recording", RECORDING_CELL),
                    "base_parameters": {"name": "{{task.name}}", "values": "{}", "day": "from-task"},
                },
            },
        ],
    }
    result = run(local, {"job": job}, day="2016-02-03")
    assert result.succeeded, result.task("with_day").error
    assert log_file.read_text() == "with_day day=2016-02-03\n"
    log_file.unlink()
    without_day = {"tasks": [notebook_task(local, "plain")]}
    assert run(local, {"job": without_day}).succeeded
    assert log_file.read_text() == "plain day=declared-default\n"


def test_a_notebook_reads_an_earlier_tasks_value_and_an_undeclared_widget_fails(local, log_file):
    """`dbutils.jobs.taskValues.get` reads a value an upstream task of this run set;
    `dbutils.widgets.get` of a name neither passed nor declared fails the task."""
    reader = write_notebook(
        local,
        "reader",
        'dbutils.jobs.taskValues.set(key="doubled", value=2 * dbutils.jobs.taskValues.get("check", "score"))',
    )
    undeclared = write_notebook(local, "undeclared", 'dbutils.widgets.get("nowhere")')
    job = {
        "tasks": [
            notebook_task(local, "check", '{"score": 21}'),
            {
                "task_key": "reader",
                "depends_on": [{"task_key": "check"}],
                "notebook_task": {"notebook_path": reader},
            },
            {"task_key": "undeclared", "notebook_task": {"notebook_path": undeclared}},
        ]
    }
    result = run(local, {"job": job})
    assert result.task("reader").values == {"doubled": 42}
    assert result.task("undeclared").status == TaskStatus.FAILED
    assert "no input widget named 'nowhere'" in result.task("undeclared").error


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["# MAGIC %sql\n# MAGIC SELECT 1"], "magic command %sql is not supported locally"),
        (["dbutils.notebook.exit('done')"], "dbutils.notebook is not available"),
    ],
)
def test_notebook_cells_the_runner_cannot_run_fail_the_task_clearly(local, log_file, cells, message):
    path = write_notebook(local, "unsupported", "# MAGIC %md\n# MAGIC Documentation only.", *cells)
    result = run(local, {"job": {"tasks": [{"task_key": "nb", "notebook_task": {"notebook_path": path}}]}})
    assert result.task("nb").status == TaskStatus.FAILED
    assert message in result.task("nb").error


def test_a_notebook_path_must_be_a_source_notebook_of_the_bundle(local, log_file):
    """As the CLI translates `notebook_path` (bundle/config/mutator/translate_paths.go): relative
    to the job's file, with its extension, a Databricks notebook; an absolute path is a workspace path."""
    plain = local.state_dir / "plain.py"
    plain.parent.mkdir(parents=True, exist_ok=True)
    plain.write_text("print('not a notebook')\n")
    for path, message in [
        ("./plain.py", "is not a Databricks notebook"),
        ("./missing.py", "not found"),
        ("/Workspace/Users/someone/nb", "is a workspace path"),
    ]:
        result = run(
            local, {"job": {"tasks": [{"task_key": "nb", "notebook_task": {"notebook_path": path}}]}}
        )
        assert result.task("nb").status == TaskStatus.FAILED
        assert message in result.task("nb").error


def test_databricks_task_values_refuse_to_run_outside_a_databricks_notebook(monkeypatch, tmp_path):
    """Outside a notebook `databricks.sdk.runtime.dbutils` is the SDK's stand-in, whose
    `taskValues.set` silently does nothing (databricks/sdk/dbutils.py, _TaskValuesUtil), or
    cannot be created without credentials: either way the Databricks task values raise."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for suffix in ("HOST", "TOKEN", "CONFIG_PROFILE", "CONFIG_FILE"):
        monkeypatch.delenv(f"DATABRICKS_{suffix}", raising=False)
    monkeypatch.delitem(sys.modules, "databricks.sdk.runtime", raising=False)
    with pytest.raises(TaskValuesUnavailableError, match=r"is not one .*: default auth"):
        DatabricksTaskValues().set("retrain", "true")
    # A loopback "workspace" that knows nothing: the SDK's host-metadata lookup gets a quick 404.
    nothing = (404, {"error_code": "NOT_FOUND", "message": "no such page"})
    with loopback_workspace(lambda *_: nothing) as host:
        monkeypatch.setenv("DATABRICKS_HOST", host)
        monkeypatch.setenv("DATABRICKS_TOKEN", "not-a-token")
        monkeypatch.delitem(sys.modules, "databricks.sdk.runtime", raising=False)
        with pytest.raises(TaskValuesUnavailableError, match="ignores taskValues.set"):
            DatabricksTaskValues().set("retrain", "true")


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


def test_run_job_task_pushes_the_parent_jobs_parameters_down_to_the_child(local, log_file):
    """A Run Job task passes its job's parameters on to the job it runs, over its own
    `job_parameters` (https://docs.databricks.com/jobs/run-job.html: "Job parameters are pushed
    down"); locally the child must define each one, or the task fails naming them."""
    trigger = {"task_key": "trigger", "run_job_task": {"job_id": "child", "job_parameters": {"x": "9"}}}
    parent = {"parameters": [{"name": "x", "default": "parent-x"}, {"name": "day", "default": "d1"}]}
    child = {
        "tasks": [wheel("inner", "rt-record", "--x={{job.parameters.x}}", "--day={{job.parameters.day}}")]
    }
    accepting = {**child, "parameters": [{"name": "x", "default": "1"}, {"name": "day", "default": ""}]}
    result = run(
        local, {"parent": {**parent, "tasks": [trigger]}, "child": accepting}, job="parent", day="d2"
    )
    assert result.succeeded
    assert "('day', 'd2'), ('name', 'inner'), ('x', 'parent-x')" in log_file.read_text()
    narrow = {**child, "parameters": [{"name": "x", "default": "1"}]}
    result = run(local, {"parent": {**parent, "tasks": [trigger]}, "child": narrow}, job="parent")
    assert result.task("trigger").status == TaskStatus.FAILED
    assert (
        "job child does not define the parameters ['day'] that job parent passes"
        in result.task("trigger").error
    )


def test_wheel_tasks_with_named_parameters_receive_the_job_parameters(local, log_file):
    """Job parameters are pushed down to Python wheel tasks configured with keyword arguments,
    not to those with positional `parameters` (https://docs.databricks.com/jobs/job-parameters.html)."""
    named = {
        "task_key": "named",
        "python_wheel_task": {
            "package_name": "runner_tasks",
            "entry_point": "rt-record",
            "named_parameters": {"name": "named", "day": "task"},
        },
    }
    job = {"parameters": [{"name": "day", "default": "job-day"}], "tasks": [named, wheel("positional")]}
    assert run(local, {"job": job}).succeeded
    assert log_file.read_text().splitlines() == [
        "named [('day', 'job-day'), ('name', 'named')]",
        "positional [('name', 'positional')]",
    ]


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"tasks": [{"task_key": "sp", "spark_python_task": {"python_file": "x.py"}}]}, "spark_python_task"),
        (
            {"tasks": [{"task_key": "nb", "notebook_task": {"notebook_path": "x.py", "source": "GIT"}}]},
            "notebook_task.source GIT",
        ),
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
        ("GREATER_THAN_OR_EQUAL", "12.0", "12", True),
        ("EQUAL_TO", "12.0", "12", False),  # == and != compare strings
        ("NOT_EQUAL", "12.0", "12", True),
        ("EQUAL_TO", "1", "1", True),
    ],
)
def test_condition_comparisons(op, left, right, expected):
    """`EQUAL_TO` / `NOT_EQUAL` compare strings ("12.0" == "12" is false), the ordering operators
    numbers (https://docs.databricks.com/jobs/if-else.html; ConditionTaskOp in databricks-sdk)."""
    assert evaluate_condition(op, left, right) is expected


def test_a_condition_on_a_task_value_that_is_not_a_scalar_fails(local, log_file):
    """Only numeric, string and boolean task values may be condition operands
    (https://docs.databricks.com/jobs/if-else.html)."""
    gate = {
        "task_key": "gate",
        "depends_on": [{"task_key": "check"}],
        "condition_task": {"op": "EQUAL_TO", "left": "{{tasks.check.values.reasons}}", "right": "[]"},
    }
    result = run(local, {"job": {"tasks": [notebook_task(local, "check", '{"reasons": []}'), gate]}})
    assert result.task("gate").status == TaskStatus.FAILED
    assert "conditions accept only numbers, strings and booleans" in result.task("gate").error


def test_an_unmet_failure_handling_run_if_excludes_the_task_and_the_job_succeeds(local, log_file):
    """`AT_LEAST_ONE_FAILED` / `ALL_FAILED` unmet: the task is Excluded, skipped and counted as a
    success; a task whose dependencies are all excluded is excluded, whatever its run_if
    (https://docs.databricks.com/jobs/run-if.html)."""
    job = {
        "tasks": [
            wheel("ok"),
            wheel("on_failure", depends_on=[{"task_key": "ok"}], run_if="AT_LEAST_ONE_FAILED"),
            wheel("all_failed", depends_on=[{"task_key": "ok"}], run_if="ALL_FAILED"),
            wheel("after_handler", depends_on=[{"task_key": "on_failure"}], run_if="ALL_DONE"),
            wheel("join", depends_on=[{"task_key": "ok"}, {"task_key": "on_failure"}], run_if="NONE_FAILED"),
        ]
    }
    result = run(local, {"job": job})
    statuses = {t.task_key: t.status for t in result.tasks}
    assert statuses == {
        "ok": TaskStatus.SUCCESS,
        "on_failure": TaskStatus.EXCLUDED,
        "all_failed": TaskStatus.EXCLUDED,
        "after_handler": TaskStatus.EXCLUDED,
        "join": TaskStatus.SUCCESS,
    }
    assert result.succeeded
    assert logged_tasks(log_file) == ["ok", "join"]


def test_an_excluded_dependency_beside_a_successful_one_counts_as_success(local, log_file):
    """ "Excluded tasks are skipped and are treated as successful"; only a task whose dependencies
    are all excluded is excluded (https://docs.databricks.com/jobs/run-if.html)."""
    job = {
        "tasks": [
            wheel("ok"),
            {"task_key": "no", "condition_task": {"op": "EQUAL_TO", "left": "a", "right": "b"}},
            wheel("branch", depends_on=[{"task_key": "no", "outcome": "true"}]),
            wheel("join", depends_on=[{"task_key": "ok"}, {"task_key": "branch"}]),
            wheel("after_branch", depends_on=[{"task_key": "branch"}]),
        ]
    }
    statuses = {t.task_key: t.status for t in run(local, {"job": job}).tasks}
    assert (statuses["branch"], statuses["join"], statuses["after_branch"]) == (
        TaskStatus.EXCLUDED,
        TaskStatus.SUCCESS,
        TaskStatus.EXCLUDED,
    )
    assert logged_tasks(log_file) == ["ok", "join"]


def test_the_check_notebook_of_the_real_monitoring_job_reads_its_parameters_from_widgets():
    """The monitoring job's `check` is a notebook task (it sets the task value retrain_gate reads):
    its base_parameters plus the job's pushed-down parameters make a valid config."""
    bundle = load_bundle(PROJECT_ROOT, "dev")
    job = bundle.job("monitoring")
    check = next(t for t in job["tasks"] if t["task_key"] == "check")["notebook_task"]
    notebook = (PROJECT_ROOT / "resources" / check["notebook_path"]).resolve()
    assert notebook.read_text().startswith("# Databricks notebook source\n# MAGIC %pip install ")
    pushed = {p["name"]: str(p["default"]) for p in job["parameters"]}
    config = config_from_widgets(MonitorCheckConfig, LocalWidgets({**check["base_parameters"], **pushed}))
    assert config.metrics_table.endswith("_drift_metrics") and config.granularity == "1 hour"


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_the_real_jobs_queue_and_the_pipeline_accepts_what_the_retrain_trigger_pushes_down(target):
    """Both jobs queue runs that meet an active one instead of skipping them
    (https://docs.databricks.com/jobs/advanced.html); the monitoring job's `retrain` task pushes
    every monitoring parameter down to the pipeline job (https://docs.databricks.com/jobs/run-job.html),
    which defines them all; every task value referenced is set by a notebook task, the only kind
    that can set one (https://docs.databricks.com/jobs/task-values.html)."""
    jobs = load_bundle(PROJECT_ROOT, target).resources["jobs"]
    assert jobs["pipeline"]["queue"] == jobs["monitoring"]["queue"] == {"enabled": True}
    retrain = next(t for t in jobs["monitoring"]["tasks"] if "run_job_task" in t)["run_job_task"]
    assert retrain["job_id"] == "pipeline"
    pushed = {p["name"] for p in jobs["monitoring"]["parameters"]} | set(retrain.get("job_parameters", {}))
    assert pushed <= {p["name"] for p in jobs["pipeline"]["parameters"]}
    for job in jobs.values():
        notebooks = {task["task_key"] for task in job["tasks"] if "notebook_task" in task}
        for task in job["tasks"]:
            for setter in re.findall(r"\{\{\s*tasks\.([^.]+)\.values\.", str(task)):
                assert setter in notebooks, f"{task['task_key']} reads a value of {setter}, not a notebook"


def test_ordering_comparison_of_text_is_an_error():
    with pytest.raises(JobDefinitionError, match="needs numbers"):
        evaluate_condition("GREATER_THAN", "abc", "1")
