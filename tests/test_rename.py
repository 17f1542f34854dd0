"""`mlops rename` on a copy of the checkout: every name changes, nothing else does."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from mlops_laptop.bundle.loader import load_bundle
from mlops_laptop.rename import Names, RenameError, rename, text_files

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NAMES = Names(project="churn-model", package="churn_model", bundle="churn")


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
    leftovers = [
        str(path.relative_to(renamed))
        for path in text_files(renamed)
        if "mlops_template" in (text := path.read_text(encoding="utf-8")) or "mlops-template" in text
    ]
    assert leftovers == []
    assert (renamed / "src" / "churn_model" / "problem_spec.py").is_file()
    assert not (renamed / "src" / "mlops_template").exists()


def test_the_packaging_builds_the_renamed_package(renamed: Path) -> None:
    project = tomllib.loads((renamed / "pyproject.toml").read_text())
    laptop = tomllib.loads((renamed / "laptop" / "pyproject.toml").read_text())
    assert project["project"]["name"] == "churn-model"
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/churn_model"]
    assert all(target.startswith("churn_model.") for target in project["project"]["scripts"].values())
    assert "churn-model" in laptop["project"]["dependencies"]
    assert "churn_model.platform" in laptop["project"]["entry-points"]


def test_the_renamed_bundle_loads_and_its_tasks_name_the_new_package(renamed: Path) -> None:
    assert yaml.safe_load((renamed / "databricks.yml").read_text())["bundle"]["name"] == "churn"
    bundle = load_bundle(renamed, "dev")
    wheel_tasks = [
        task["python_wheel_task"]
        for job in bundle.resources["jobs"].values()
        for task in job["tasks"]
        if "python_wheel_task" in task
    ]
    assert wheel_tasks
    assert {task["package_name"] for task in wheel_tasks} == {"churn_model"}


def test_every_renamed_python_file_still_compiles(renamed: Path) -> None:
    for path in renamed.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_names_the_tools_would_refuse_are_refused_before_anything_changes(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    before = (root / "pyproject.toml").read_text()
    with pytest.raises(RenameError, match="package 'Churn-Model'.*bundle 'churn model'"):
        rename(root, Names(project="churn-model", package="Churn-Model", bundle="churn model"), relock=False)
    assert (root / "pyproject.toml").read_text() == before
    assert (root / "src" / "mlops_template").is_dir()
