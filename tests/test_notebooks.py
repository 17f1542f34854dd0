"""Notebooks on a workspace: the wheel they install, the files bundle sync uploads, the target they use."""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from databricks.sdk.service.jobs import Job, JobSettings

from loopback import authenticate_to, loopback_workspace
from mlops_laptop.bundle.loader import ResolvedBundle, ResourceId, load_bundle
from mlops_laptop.pipeline_names import pipeline_names
from mlops_laptop.platform.local import LocalPlatform
from mlops_template.bundle.deployment import DeployedJobs, DeploymentError, find_deployment, read_deployment
from mlops_template.pipeline_names import PipelineNames
from mlops_template.platform import DatabricksPlatform

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("dev", "staging", "prod")
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").rglob("*.py"))
_MAGIC = re.compile(r"^# MAGIC %(pip|run)\s+(.*)$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("BUNDLE_VAR_")] + ["MLOPS_TARGET"]:
        monkeypatch.delenv(name, raising=False)


def magic_paths(notebook: Path) -> list[tuple[str, str]]:
    """(command, path) of each `%pip install` / `%run` path argument of a source notebook."""
    found = []
    for command, rest in _MAGIC.findall(notebook.read_text()):
        words = rest.split()
        arguments = words[1:] if command == "pip" and words[:1] == ["install"] else words
        found += [(command, word) for word in arguments if not word.startswith("-")]
    return found


# --- the wheel a notebook installs ---------------------------------------------------------------


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[str(p.relative_to(PROJECT_ROOT)) for p in NOTEBOOKS])
@pytest.mark.parametrize("target", TARGETS)
def test_notebook_installs_the_wheel_the_jobs_get(notebook: Path, target: str) -> None:
    """The CLI uploads every wheel a job references, patched to a per-deploy version (dynamic_version),
    to ${workspace.artifact_path}/.internal, emptied on each deploy (bundle/artifacts/upload.go CleanUp,
    bundle/libraries/filer.go InternalDirName; acceptance/bundle/artifacts/whl_dynamic/output.txt).
    A notebook runs from ${workspace.file_path}/<its folder>, its working directory on DBR 14+:
    its `%pip install` must reach that folder, not the git-ignored dist/ that sync skips."""
    bundle = load_bundle(PROJECT_ROOT, target)
    folder = posixpath.join(
        bundle.workspace["file_path"], notebook.parent.relative_to(PROJECT_ROOT).as_posix()
    )
    installs = [path for command, path in magic_paths(notebook) if command == "pip"]
    assert installs, f"{notebook.name} installs no wheel"
    for path in installs:
        assert posixpath.normpath(posixpath.join(folder, path)) == posixpath.join(
            bundle.workspace["artifact_path"], ".internal", "*.whl"
        ), path


def test_every_notebook_has_the_same_install_cell_for_its_depth() -> None:
    """One install cell, first code cell of every notebook (the thin task notebooks included)."""
    for notebook in NOTEBOOKS:
        depth = len(notebook.relative_to(PROJECT_ROOT).parts)  # its folders, plus files/
        source = notebook.read_text().removeprefix("# Databricks notebook source\n")
        first_code = next(c for c in source.split("# COMMAND ----------") if "# MAGIC %md" not in c)
        assert (
            first_code.strip() == f"# MAGIC %pip install {'../' * depth}artifacts/.internal/*.whl --quiet"
        ), notebook


# --- bundle sync skips git-ignored files -------------------------------------------------------


def git_ignored(paths: list[str]) -> set[str]:
    """The paths (relative to the project) that .gitignore rules exclude, as `git check-ignore` says."""
    if not paths:
        return set()
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


def synced(bundle: ResolvedBundle, paths: list[str]) -> dict[str, bool]:
    """Bundle sync: git-tracked (not ignored) files, plus sync.include globs, minus sync.exclude
    (libs/sync/filelist.go Files; libs/git/fileset.go honours .gitignore)."""
    include, exclude = bundle.sync.get("include") or [], bundle.sync.get("exclude") or []
    ignored = git_ignored(paths)
    return {
        path: (path not in ignored or any(fnmatch.fnmatch(path, g) for g in include))
        and not any(fnmatch.fnmatch(path, g) for g in exclude)
        for path in paths
    }


def _local(path: Any) -> bool:
    text = str(path)
    return bool(text) and not text.startswith(("/", "-", "${")) and "://" not in text and "/" in text


def job_file_references(bundle: ResolvedBundle) -> tuple[list[str], list[str]]:
    """(synced files, uploaded libraries) the jobs name by local path, relative to the project."""
    files, libraries = [], []
    for key, job in bundle.resources.get("jobs", {}).items():
        base = bundle.sources[f"resources.jobs.{key}"].parent
        for environment in job.get("environments", []):
            libraries += [d for d in environment.get("spec", {}).get("dependencies", []) if _local(d)]
        for task in job.get("tasks", []):
            for library in task.get("libraries", []):
                libraries += [v for v in library.values() if _local(v)]
            for kind, field in (("notebook_task", "notebook_path"), ("spark_python_task", "python_file")):
                if _local(task.get(kind, {}).get(field)):
                    path = str(task[kind][field])
                    files.append(path if path.endswith(".py") else f"{path}.py")
    relative = [posixpath.normpath((base / p).as_posix()) for p in files]
    return relative, [posixpath.normpath((base / p).as_posix()) for p in libraries]


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_deployed_references_a_path_sync_skips(target: str) -> None:
    """Notebooks, task files and the paths notebooks install or %run must be synced; the jobs'
    local wheels are uploaded by the CLI only when an artifact builds them (bundle/artifacts/prepare.go:
    a built whl artifact's files are <path>/dist/*.whl)."""
    bundle = load_bundle(PROJECT_ROOT, target)
    task_files, libraries = job_file_references(bundle)
    notebook_refs = []
    for notebook in NOTEBOOKS:
        for _, path in magic_paths(notebook):
            local = posixpath.normpath((notebook.parent.relative_to(PROJECT_ROOT) / path).as_posix())
            if not local.startswith("../"):  # outside the synced tree: checked by the install test
                notebook_refs.append(local)
    notebooks = [p.relative_to(PROJECT_ROOT).as_posix() for p in NOTEBOOKS]
    sync = synced(bundle, task_files + notebook_refs + notebooks)
    assert [path for path, ok in sync.items() if not ok] == []
    for path in task_files:
        assert (PROJECT_ROOT / path).is_file(), f"a job runs {path}, which does not exist"
    artifact_files = [
        posixpath.normpath(posixpath.join(spec.get("path", "."), "dist", "*.whl"))
        for spec in bundle.artifacts.values()
        if spec.get("type") == "whl"
    ]
    for library in libraries:
        assert library in artifact_files, f"{library} is neither synced nor built by an artifact"


def test_the_sync_check_catches_an_ignored_notebook_path(tmp_path: Path) -> None:
    """The old install cell (`../dist/*.whl` from notebooks/) names a git-ignored path."""
    bundle = load_bundle(PROJECT_ROOT, "dev")
    assert synced(bundle, ["dist/mlops_template-0.1.0-py3-none-any.whl", "notebooks/01_explore_data.py"]) == {
        "dist/mlops_template-0.1.0-py3-none-any.whl": False,
        "notebooks/01_explore_data.py": True,
    }


# --- the target a deployed notebook uses ----------------------------------------------------------


class FakeJobs:
    """`GET /api/2.2/jobs/get` over deployed job settings, as the Jobs service answers it."""

    def __init__(self, settings: dict[int, dict[str, Any]]) -> None:
        self.settings = settings
        self.calls: list[str] = []

    def handle(self, method: str, url: str) -> tuple[int, dict[str, Any]]:
        self.calls.append(f"{method} {url}")
        parsed = urlparse(url)
        job_id = int(parse_qs(parsed.query).get("job_id", ["0"])[0])
        if method != "GET" or parsed.path != "/api/2.2/jobs/get" or job_id not in self.settings:
            return 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Job {job_id} does not exist."}
        job = Job(job_id=job_id, settings=JobSettings.from_dict(self.settings[job_id]))
        return 200, job.as_dict()


@pytest.fixture
def fake_jobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeJobs]:
    """The Jobs service, reached by a `WorkspaceClient()` configured from the environment alone."""
    fake = FakeJobs({})
    with loopback_workspace(lambda method, path, _body: fake.handle(method, path)) as host:
        authenticate_to(monkeypatch, host, tmp_path)
        yield fake


def deployed_copy(tmp_path: Path, target: str, job_ids: dict[str, int]) -> Path:
    """The bundle's files as sync uploads them to ${workspace.file_path}, with the metadata.json the
    CLI writes to ${workspace.state_path} (bundle/metadata/metadata.go, deploy/metadata/compute.go)."""
    root = tmp_path / ".bundle" / "mlops_bundle" / target
    files = root / "files"
    files.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "databricks.yml", files)
    shutil.copytree(PROJECT_ROOT / "resources", files / "resources")
    (files / "notebooks").mkdir()
    (root / "state").mkdir()
    metadata = {
        "version": 1,
        "config": {
            "bundle": {"name": "mlops_bundle", "target": target, "mode": "production", "git": {}},
            "workspace": {"file_path": str(files)},
            "resources": {"jobs": {key: {"id": str(i), "relative_path": "x"} for key, i in job_ids.items()}},
            "presets": {"source_linked_deployment": False},
        },
        "extra": {},
    }
    (root / "state" / "metadata.json").write_text(json.dumps(metadata))
    return files


def as_deployed(job: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    """A resolved job as the Jobs service stores it: deploy-time ids filled in."""

    def fill(value: Any) -> Any:
        if isinstance(value, ResourceId):
            return ids[str(value)]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return fill(job)


def deploy(fake: FakeJobs, tmp_path: Path, target: str, variables: dict[str, str]) -> Path:
    """What `databricks bundle deploy -t TARGET --var ...` leaves: files, metadata and jobs."""
    ids = {"pipeline": 101, "monitoring": 102}
    bundle = load_bundle(PROJECT_ROOT, target, variables)
    ids |= {key: 200 + i for i, key in enumerate(sorted(bundle.resources["jobs"])) if key not in ids}
    fake.settings = {ids[key]: as_deployed(job, ids) for key, job in bundle.resources["jobs"].items()}
    return deployed_copy(tmp_path, target, ids)


def test_a_deployed_notebook_uses_the_deployed_target_and_its_var_values(
    fake_jobs: FakeJobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metadata.json names the target; the deployed jobs carry the --var values (no re-reading of
    the YAML's defaults, no fallback to the default target dev), the schema's included."""
    files = deploy(
        fake_jobs,
        tmp_path,
        "staging",
        {"catalog": "ml_stage", "schema": "other", "source_table": "raw.source.all"},
    )
    monkeypatch.chdir(files / "notebooks")
    jobs = DatabricksPlatform().deployed_jobs()
    names = PipelineNames.of(jobs)
    variables = load_bundle(PROJECT_ROOT, "staging").variables
    assert jobs.target == "staging"
    assert names.model_name == f"ml_stage.other.{variables['model_name']}"
    assert names.monitoring_tables.payload == f"ml_stage.other.{variables['inference_table_prefix']}_payload"
    assert "--source-table=raw.source.all" in jobs.task_parameters("pipeline", "prepare_data")
    assert jobs.parameter("monitoring", "granularity") == "1 hour"
    assert any(call.startswith("GET /api/2.2/jobs/get?job_id=101") for call in fake_jobs.calls)
    with pytest.raises(DeploymentError, match="deployed for target staging, not prod"):
        DatabricksPlatform().deployed_jobs("prod")


def test_a_notebook_outside_deployed_files_on_databricks_is_told_to_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeploymentError, match="databricks bundle deploy"):
        DatabricksPlatform().deployed_jobs()


@pytest.mark.parametrize("target", TARGETS)
def test_the_deploy_task_gives_the_names_the_variables_define(target: str) -> None:
    """The names are read from the deploy task's parameters, on Databricks and locally alike: they
    must be the bundle's variables and schema resource (development mode's prefix included)."""
    bundle = load_bundle(PROJECT_ROOT, target)
    schema = bundle.resources["schemas"]["pipeline_schema"]["name"]
    variables = bundle.variables
    assert pipeline_names(bundle) == PipelineNames(
        catalog=variables["catalog"],
        schema=schema,
        model_name=f"{variables['catalog']}.{schema}.{variables['model_name']}",
        endpoint=variables["endpoint_name"],
        experiment=variables["experiment_name"],
        inference_table_prefix=variables["inference_table_prefix"],
    )


def test_task_parameters_get_the_job_parameters_defaults_and_refuse_run_time_values() -> None:
    job = {
        "parameters": [{"name": "start", "default": "2024-01-01"}],
        "tasks": [
            {
                "task_key": "score",
                "python_wheel_task": {"parameters": ["--start={{job.parameters.start}}", "--x=1"]},
            },
            {"task_key": "train", "python_wheel_task": {"parameters": ["--run={{job.run_id}}"]}},
        ],
    }
    jobs = DeployedJobs("dev", {"pipeline": job})
    assert jobs.task_parameters("pipeline", "score") == ["--start=2024-01-01", "--x=1"]
    with pytest.raises(DeploymentError, match=r"only when the job runs"):
        jobs.task_parameters("pipeline", "train")
    with pytest.raises(DeploymentError, match="no wheel task 'other'"):
        jobs.task_parameters("pipeline", "other")
    with pytest.raises(DeploymentError, match=r"no job 'monitoring' \(its jobs: \['pipeline'\]\)"):
        jobs.parameter("monitoring", "granularity")


def test_a_source_checkout_uses_the_asked_or_default_target(
    platform: LocalPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No metadata.json beside the files: the laptop picks the target as the CLI would."""
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")
    assert find_deployment(PROJECT_ROOT / "notebooks") is None
    assert platform.deployed_jobs().target == "dev"
    monkeypatch.setenv("MLOPS_TARGET", "prod")
    assert platform.deployed_jobs().target == "prod"
    assert platform.deployed_jobs("staging").target == "staging"


def test_metadata_of_other_files_is_ignored(tmp_path: Path) -> None:
    """metadata.json counts only when its file_path is the folder the notebook runs from."""
    files = deployed_copy(tmp_path, "prod", {"pipeline": 1})
    assert find_deployment(files / "notebooks") == read_deployment(files)
    assert read_deployment(files) is not None
    metadata = json.loads((files.parent / "state" / "metadata.json").read_text())
    metadata["config"]["workspace"]["file_path"] = "/Workspace/Users/someone/.bundle/x/prod/files"
    (files.parent / "state" / "metadata.json").write_text(json.dumps(metadata))
    assert read_deployment(files) is None
