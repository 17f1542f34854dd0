"""`mlops rename` on a copy of the checkout: every name changes, nothing else does."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.rename import Names, RenameError, current_names, rename, text_files, word_pattern

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Read from the checkout, so this test still runs after a team has renamed its project.
BEFORE = current_names(PROJECT_ROOT)
NAMES = Names(project="acme-forecast", package="acme_forecast", bundle="acme")


def _copy_checkout(destination: Path) -> Path:
    """The tracked and new (not ignored) files of this checkout, as a fresh clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = PROJECT_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _copy_checkout(tmp_path_factory.mktemp("checkout"))
    rename(root, NAMES, relock=False)
    return root


def test_no_old_name_is_left_anywhere(renamed: Path) -> None:
    old = [word_pattern(name) for name in BEFORE.words()]
    leftovers = [
        str(path.relative_to(renamed))
        for path in text_files(renamed)
        if any(pattern.search(path.read_text()) for pattern in old)
    ]
    assert leftovers == []
    assert current_names(renamed) == NAMES
    assert (renamed / "src" / "acme_forecast" / "problem_spec.py").is_file()
    assert not (renamed / "src" / BEFORE.package).exists()


def test_the_renamed_imports_are_sorted_as_make_lint_wants(renamed: Path) -> None:
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "I", "src", "laptop", "tests"],
        cwd=renamed,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout


def test_the_packaging_builds_the_renamed_package(renamed: Path) -> None:
    project = tomllib.loads((renamed / "pyproject.toml").read_text())
    laptop = tomllib.loads((renamed / "laptop" / "pyproject.toml").read_text())
    assert project["project"]["name"] == "acme-forecast"
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/acme_forecast"]
    assert all(target.startswith("acme_forecast.") for target in project["project"]["scripts"].values())
    assert "acme-forecast" in laptop["project"]["dependencies"]
    assert "acme_forecast.platform" in laptop["project"]["entry-points"]


def test_the_renamed_bundle_loads_and_its_tasks_name_the_new_package(renamed: Path) -> None:
    bundle = load_bundle(renamed, "dev")
    assert bundle.name == "acme"
    assert bundle.job("pipeline")["name"].endswith("acme-pipeline-dev")
    wheel_tasks = [
        task["python_wheel_task"]
        for job in bundle.resources["jobs"].values()
        for task in job["tasks"]
        if "python_wheel_task" in task
    ]
    assert wheel_tasks
    assert {task["package_name"] for task in wheel_tasks} == {"acme_forecast"}


def test_every_renamed_python_file_still_compiles(renamed: Path) -> None:
    for path in renamed.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_names_the_tools_would_refuse_are_refused_before_anything_changes(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    before = (root / "pyproject.toml").read_text()
    with pytest.raises(RenameError, match="package 'Acme-Forecast'.*bundle 'acme forecast'"):
        rename(
            root,
            Names(project="acme-forecast", package="Acme-Forecast", bundle="acme forecast"),
            relock=False,
        )
    with pytest.raises(RenameError, match="three different names"):
        rename(root, Names("acme", "acme", "acme"), relock=False)
    with pytest.raises(RenameError, match="already name something"):
        rename(
            root, Names(project="acme-forecast", package="acme_forecast", bundle=BEFORE.package), relock=False
        )
    assert (root / "pyproject.toml").read_text() == before
    assert current_names(root) == BEFORE
