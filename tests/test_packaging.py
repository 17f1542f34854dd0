"""The wheel the jobs install: the team's pipeline and the Databricks side only.

The laptop platform (package `mlops_laptop`: local Spark, bundle runner, local endpoint, CLI) and
what only it needs stay out of the wheel Databricks installs (issue "A template a team can adopt":
the wheel requires only what the jobs import; Spark is the runtime's).
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Distributions only the laptop platform or development needs.
LAPTOP_ONLY = {
    *("pyspark", "starlette", "uvicorn", "typer", "rich", "jsonschema", "databricks-bundles", "pyyaml")
}


def _uv() -> str:
    """uv from PATH, else the one the Makefile bootstraps into .tools/ (make test runs either)."""
    found = shutil.which("uv") or PROJECT_ROOT / ".tools" / "bin" / "uv"
    return str(found)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--wheel", "--out-dir", str(out), "--quiet"], cwd=PROJECT_ROOT, check=True
    )
    (built,) = out.glob("mlops_template-*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_the_wheel_holds_no_laptop_platform(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    packages = {top for top in tops if not top.endswith(".dist-info")}
    assert packages == {"mlops_template"}


def test_the_wheel_requires_nothing_only_the_laptop_needs(wheel: zipfile.ZipFile) -> None:
    required = [
        Requirement(line.removeprefix("Requires-Dist: "))
        for line in _metadata(wheel, "METADATA").splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    unconditional = {r.name.lower() for r in required if r.marker is None}
    assert unconditional, "the wheel declares no requirements"
    assert unconditional & LAPTOP_ONLY == set()


def test_every_wheel_task_of_the_bundle_is_an_entry_point_of_the_wheel(wheel: zipfile.ZipFile) -> None:
    scripts = {
        line.split("=")[0].strip()
        for line in _metadata(wheel, "entry_points.txt").split("[console_scripts]")[1].splitlines()
        if "=" in line
    }
    wanted = {
        task["python_wheel_task"]["entry_point"]
        for path in (PROJECT_ROOT / "resources").glob("*.yml")
        for job in (yaml.safe_load(path.read_text())["resources"].get("jobs") or {}).values()
        for task in job["tasks"]
        if "python_wheel_task" in task
    }
    assert wanted
    assert wanted <= scripts
    assert "mlops" not in scripts  # the CLI is the laptop platform's
