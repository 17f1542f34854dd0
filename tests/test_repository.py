"""The repository's own contracts: CI workflows, README commands and Makefile targets agree."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlops_laptop.cli import app

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (PROJECT_ROOT / "Makefile").read_text(), re.MULTILINE))
# Commands other than make / mlops / databricks that workflows and the README may run.
OTHER_COMMANDS = {"echo", "python", "git", "cd", "curl", "export", "MLOPS_PLATFORM=databricks"}


def check_mlops_command(arguments: list[str]) -> None:
    """Parse `mlops ARGS` with the real CLI without running it: `--help` is eager, so the
    subcommands and option names are checked and then only the help is printed."""
    result = CliRunner().invoke(app, [*arguments, "--help"])
    assert result.exit_code == 0, f"mlops {' '.join(arguments)}: {result.output}"


def check_command(line: str) -> None:
    """A shell line as a user or CI runs it: its program and targets must exist here."""
    words = shlex.split(line, comments=True)
    if not words:
        return
    if words[:2] == ["uv", "run"]:
        words = words[2:]
        if words[:1] == ["--no-sync"]:
            words = words[1:]
    program, *arguments = words
    if program == "make":
        assert set(arguments) <= MAKE_TARGETS, f"unknown make target in '{line}'"
    elif program == "mlops":
        check_mlops_command(arguments)
    elif program == "databricks":
        assert arguments[0] in {"bundle", "auth"}, f"unexpected databricks command '{line}'"
    elif program in {"uv", "pip"}:
        assert arguments[0] in {"sync", "run", "build", "install", "lock"}, line
    else:
        assert program in OTHER_COMMANDS, f"'{line}' runs '{program}', which nothing installs"


def workflow_commands(path: Path) -> list[str]:
    workflow = yaml.safe_load(path.read_text())
    assert {"name", "jobs"} <= set(workflow) and True in workflow, f"{path.name} lacks name/on/jobs"
    return [
        line
        for job in workflow["jobs"].values()
        for step in job["steps"]
        for line in step.get("run", "").splitlines()
    ]


def readme_commands() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_parses_and_runs_only_commands_that_exist(path):
    commands = workflow_commands(path)
    assert commands
    for line in commands:
        check_command(line)


def test_workflows_cover_pull_requests_main_and_release_tags():
    triggers = {path.name: yaml.safe_load(path.read_text())[True] for path in WORKFLOWS}
    assert any("pull_request" in on for on in triggers.values())
    assert any(on.get("push", {}).get("branches") == ["main"] for on in triggers.values() if "push" in on)
    assert any("tags" in on.get("push", {}) for on in triggers.values() if "push" in on)
    text = "".join(path.read_text() for path in WORKFLOWS)
    for secret in ("DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        assert f"secrets.{secret}" in text


def test_readme_commands_exist_as_written():
    commands = readme_commands()
    programs = {" ".join(shlex.split(line, comments=True)) for line in commands}
    assert {"make run", "make test"} <= programs
    for line in commands:
        check_command(line)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()


def test_a_misspelled_cli_option_is_caught():
    with pytest.raises(AssertionError, match="No such option"):
        check_mlops_command(["run", "pipeline", "--targte", "dev"])
    with pytest.raises(AssertionError, match="No such command"):
        check_mlops_command(["bundel", "validate"])


def test_production_deploys_run_as_the_deploying_principal():
    """run_as.go (databricks/cli): resources such as quality monitors and serving endpoints refuse a
    run_as identity other than the deploying one, and databricks.yml puts staging/prod in the
    principal's home folder: every workflow that touches staging or prod deploys as the principal
    (its OAuth client) and names that same principal as `service_principal_id`."""
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        for job in workflow["jobs"].values():
            commands = " ".join(step.get("run", "") for step in job["steps"])
            if not re.search(r"databricks bundle \w+ .*-t (staging|prod)", commands):
                continue
            env = job.get("env", {})
            assert env.get("DATABRICKS_CLIENT_ID") == "${{ secrets.DATABRICKS_CLIENT_ID }}", path.name
            assert env.get("BUNDLE_VAR_service_principal_id") == env["DATABRICKS_CLIENT_ID"], path.name
