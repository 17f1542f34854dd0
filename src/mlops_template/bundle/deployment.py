"""What `databricks bundle deploy` left on the workspace: the target and its jobs as deployed.

The CLI syncs the bundle's files to `${workspace.file_path}` and writes `metadata.json` to
`${workspace.state_path}` (bundle/deploy/metadata/compute.go, upload.go): the target, its mode, the
file path and the id of every deployed job. With the default paths (`root_path/files`,
`root_path/state`) a notebook running from the synced files finds it at `../state/metadata.json`
of the files' root. The deployed jobs (`jobs.get`) carry every resolved value, `--var` ones included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_FILE = Path("..", "state", "metadata.json")
# A dynamic value reference to a job parameter; Databricks fills it in when the job runs.
_JOB_PARAMETER = re.compile(r"\{\{\s*job\.parameters\.(\w+)\s*\}\}")


class DeploymentError(RuntimeError):
    """The deployment cannot be read, or lacks what was asked for; the message says what to do."""


@dataclass(frozen=True)
class DeployedJobs:
    """A target's jobs as the Jobs service holds them: job key -> `JobSettings.as_dict()`."""

    target: str
    jobs: Mapping[str, Mapping[str, Any]]

    def job(self, key: str) -> Mapping[str, Any]:
        if key not in self.jobs:
            raise DeploymentError(f"target {self.target} has no job '{key}' (its jobs: {sorted(self.jobs)})")
        return self.jobs[key]

    def parameter(self, job: str, name: str) -> str:
        """The default of a job parameter: what a run started without parameters gets."""
        for parameter in self.job(job).get("parameters") or []:
            if parameter["name"] == name:
                return str(parameter.get("default", ""))
        raise DeploymentError(f"job '{job}' of target {self.target} has no parameter '{name}'")

    def task_parameters(self, job: str, task_key: str) -> list[str]:
        """A wheel task's parameters, `{{job.parameters.*}}` filled with the job parameters' defaults."""
        tasks = {task["task_key"]: task for task in self.job(job).get("tasks") or []}
        if "python_wheel_task" not in tasks.get(task_key, {}):
            raise DeploymentError(f"job '{job}' of target {self.target} has no wheel task '{task_key}'")
        filled = [
            _JOB_PARAMETER.sub(lambda match: self.parameter(job, match.group(1)), str(parameter))
            for parameter in tasks[task_key]["python_wheel_task"].get("parameters") or []
        ]
        if run_time := [parameter for parameter in filled if "{{" in parameter]:
            raise DeploymentError(
                f"task '{task_key}' of job '{job}' gets {run_time} only when the job runs: "
                "read the values it needs from another task"
            )
        return filled


@dataclass(frozen=True)
class Deployment:
    """The parts of the CLI's metadata.json (version 1) a notebook needs."""

    target: str
    file_path: str
    job_ids: dict[str, int]

    def deployed_jobs(self, client: Any) -> DeployedJobs:
        """The settings of the deployed jobs, read with `client` (a `WorkspaceClient`)."""
        return DeployedJobs(
            self.target,
            {key: client.jobs.get(job_id=job_id).settings.as_dict() for key, job_id in self.job_ids.items()},
        )


def find_deployment(start: Path) -> Deployment | None:
    """The deployment whose synced files hold folder `start`, or None (e.g. in a source checkout)."""
    for folder in (start, *start.parents):
        if (deployment := read_deployment(folder)) is not None:
            return deployment
    return None


def read_deployment(root: Path) -> Deployment | None:
    """The deployment whose synced files are at `root`, or None when `root` is not their root."""
    file = root / METADATA_FILE
    if not file.is_file():
        return None
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
        config = metadata["config"]
        deployment = Deployment(
            target=str(config["bundle"]["target"]),
            file_path=str(config["workspace"]["file_path"]),
            job_ids={
                key: int(job["id"]) for key, job in (config.get("resources", {}).get("jobs") or {}).items()
            },
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DeploymentError(f"cannot read the deployment metadata {file}: {error!r}") from None
    if metadata.get("version") != 1:
        raise DeploymentError(f"{file}: metadata version {metadata.get('version')} is not 1")
    return deployment if _same_directory(deployment.file_path, root) else None


def _same_directory(workspace_path: str, root: Path) -> bool:
    """metadata.json belongs to these files (`/Workspace/Users/...` and `/Users/...` name the same folder)."""
    return workspace_path.removeprefix("/Workspace") == str(root.resolve()).removeprefix("/Workspace")
