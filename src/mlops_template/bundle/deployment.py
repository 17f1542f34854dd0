"""What `databricks bundle deploy` left on the workspace: the target and the deployed jobs.

The CLI syncs the bundle's files to `${workspace.file_path}` and writes `metadata.json` to
`${workspace.state_path}` (bundle/deploy/metadata/compute.go, upload.go): the target, its mode, the
file path and the id of every deployed job. With the default paths (`root_path/files`,
`root_path/state`) a notebook running from the synced files finds it at `../state/metadata.json`.

`--var` values given at deploy time are not in metadata.json, but they are in the deployed jobs:
`deployed_variables` reads them back from the job settings (`jobs.get`) wherever a job field is a
template of `${var.*}` references, and `check_deployed` refuses a resolution whose task parameters
differ from what was deployed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_template.bundle.loader import (
    KEYED_LISTS,
    REFERENCE_PATTERN,
    BundleConfig,
    BundleError,
    PathKey,
    ResolvedBundle,
    dotted,
    merge,
    select_target,
)

METADATA_FILE = Path("..", "state", "metadata.json")
# Job fields a task reads its values from (the paths the CLI rewrites, e.g. notebook_path, are left out).
_COMPARED = ("parameters", "tasks")
_TASK_FIELDS = ("python_wheel_task", "notebook_task", "condition_task", "run_job_task")
# Written as local paths or references the CLI replaces at deploy time.
_REWRITTEN = frozenset({"notebook_path", "job_id", "dependencies"})


@dataclass(frozen=True)
class Deployment:
    """The parts of the CLI's metadata.json (version 1) a notebook needs."""

    target: str
    mode: str
    file_path: str
    job_ids: dict[str, int]


def read_deployment(root: Path) -> Deployment | None:
    """The deployment whose synced files are at `root`, or None in a source checkout."""
    file = root / METADATA_FILE
    if not file.is_file():
        return None
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
        config = metadata["config"]
        deployment = Deployment(
            target=str(config["bundle"]["target"]),
            mode=str(config["bundle"].get("mode", "")),
            file_path=str(config["workspace"]["file_path"]),
            job_ids={
                key: int(job["id"]) for key, job in (config.get("resources", {}).get("jobs") or {}).items()
            },
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BundleError(f"cannot read the deployment metadata: {error!r}", file=file) from None
    if metadata.get("version") != 1:
        raise BundleError(f"metadata version {metadata.get('version')} is not 1", file=file)
    return deployment if _same_directory(deployment.file_path, root) else None


def _same_directory(workspace_path: str, root: Path) -> bool:
    """metadata.json belongs to these files (`/Workspace/Users/...` and `/Users/...` name the same folder)."""
    return workspace_path.removeprefix("/Workspace") == str(root.resolve()).removeprefix("/Workspace")


def deployed_variables(
    config: BundleConfig, target: str, deployed: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Variable values read back from deployed job settings (job key -> `JobSettings.as_dict()`).

    A field written as a template of references (`--model-name=${var.catalog}.${...}.${var.model_name}`)
    is matched against its deployed value; a field with a single `${var.x}` wins over longer templates.
    """
    _, definition = select_target(config, target)
    jobs = (merge(config.data.get("resources"), definition.get("resources"), ("resources",)) or {}).get(
        "jobs"
    ) or {}
    found: dict[str, tuple[int, str]] = {}
    for key, settings in deployed.items():
        if key not in jobs:
            continue
        for template, value in _pairs(jobs[key], settings, ("resources", "jobs", key)):
            for rank, (var, text) in _matches(template, value):
                if var not in found or rank < found[var][0]:
                    found[var] = (rank, text)
    return {var: text for var, (_, text) in found.items()}


def check_deployed(bundle: ResolvedBundle, deployed: Mapping[str, Mapping[str, Any]]) -> None:
    """BundleError naming the first task or job parameter that differs from the deployed job."""
    for key, settings in deployed.items():
        job = bundle.resources.get("jobs", {}).get(key)
        if job is None:
            continue
        for field in _COMPARED:
            for resolved, value in _pairs(
                job.get(field), settings.get(field), ("resources", "jobs", key, field)
            ):
                if str(resolved) != str(value):
                    raise BundleError(
                        f"the deployed job differs from databricks.yml for target {bundle.target}: deployed "
                        f"{value!r}, resolved {resolved!r}; deploy again, or give the value in the target's "
                        "variables",
                        file=bundle.sources.get(f"resources.jobs.{key}"),
                        key=dotted(_position(resolved)),
                    )


def _pairs(written: Any, deployed: Any, path: PathKey) -> Iterator[tuple[Any, Any]]:
    """(written, deployed) string leaves at the same place of both trees; keyed lists match by key."""
    if isinstance(written, str) or not isinstance(written, dict | list):
        if isinstance(written, str) and isinstance(deployed, str | int | float | bool):
            yield _Positioned(written, path), deployed
        return
    if isinstance(written, dict) and isinstance(deployed, dict):
        for key, item in written.items():
            in_task = len(path) == 5 and path[3] == "tasks"
            if key in deployed and key not in _REWRITTEN and (key in _TASK_FIELDS or not in_task):
                yield from _pairs(item, deployed[key], (*path, key))
    elif isinstance(written, list) and isinstance(deployed, list):
        key_name = _key_of(path)
        for index, item in enumerate(written):
            other = _counterpart(item, index, deployed, key_name)
            if other is not None:
                yield from _pairs(item, other, (*path, index))


def _key_of(path: PathKey) -> str | None:
    if path[-1] == "environments":
        return "environment_key"
    return KEYED_LISTS.get(("jobs", str(path[-1]))) if len(path) == 4 else None


def _counterpart(item: Any, index: int, deployed: list[Any], key_name: str | None) -> Any:
    if key_name is None:
        return deployed[index] if index < len(deployed) else None
    key = item.get(key_name) if isinstance(item, dict) else None
    return next((d for d in deployed if isinstance(d, dict) and d.get(key_name) == key), None)


class _Positioned(str):
    """A written string that remembers where it was written (for error messages)."""

    path: PathKey

    def __new__(cls, text: str, path: PathKey) -> _Positioned:
        value = super().__new__(cls, text)
        value.path = path
        return value


def _position(value: Any) -> PathKey:
    return getattr(value, "path", ("resources", "jobs"))


def _matches(template: str, value: Any) -> Iterator[tuple[int, tuple[str, str]]]:
    """(rank, (variable, value)) for each `${var.x}` of `template` that matched deployed `value`."""
    parts, names, position = [], [], 0
    for match in REFERENCE_PATTERN.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        position = match.end()
        reference = match.group(2)
        if match.group(1):  # "$${x}" is the literal "${x}"
            parts.append(re.escape(match.group(0)[1:]))
        elif reference.startswith("var.") and "." not in reference[4:] and "[" not in reference:
            group = f"v{len(names)}"
            names.append((group, reference[4:]))
            parts.append(f"(?P<{group}>.*?)")
        else:
            parts.append(".*?")
    if not names:
        return
    parts.append(re.escape(template[position:]))
    found = re.fullmatch("".join(parts), str(value), re.DOTALL)
    if found is None:
        return
    for group, var in names:
        yield len(names), (var, found.group(group))
