"""What the notebooks share: the platform and the bundle's resolved names for one target.

On Databricks the notebooks run from the bundle's synced files (`notebooks/` beside
databricks.yml): they use the target those files were deployed with (the CLI's metadata.json)
and the variable values the deployed jobs carry, `--var` ones included. In a source checkout:
the target asked for, else `$MLOPS_TARGET`, else the bundle's default target.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlops_template.bundle.deployment import (
    Deployment,
    check_deployed,
    deployed_variables,
    read_deployment,
)
from mlops_template.bundle.loader import (
    ResolvedBundle,
    find_bundle_root,
    load_bundle,
    read_config,
    resolve_bundle,
)
from mlops_template.pipeline_names import PipelineNames
from mlops_template.platform import Platform, get_platform
from mlops_template.tasks.common import TaskConfig, build_config

ConfigT = TypeVar("ConfigT", bound=TaskConfig)


@dataclass(frozen=True)
class NotebookContext:
    """A target's tables, model and endpoint names, and the platform to reach them."""

    bundle: ResolvedBundle
    platform: Platform

    @property
    def names(self) -> PipelineNames:
        return PipelineNames.of(self.bundle)

    @property
    def catalog(self) -> str:
        return self.names.catalog

    @property
    def schema(self) -> str:
        return self.names.schema

    def table(self, name: str) -> str:
        """The three-level name of a table of the pipeline."""
        return self.names.table(name)

    @property
    def model_name(self) -> str:
        return self.names.model_name

    @property
    def endpoint_name(self) -> str:
        return self.names.endpoint

    def task_config(self, job: str, task_key: str, config_type: type[ConfigT]) -> ConfigT:
        """The config a job's wheel task gets from the bundle (it must not use `{{...}}` references)."""
        task = next(t for t in self.bundle.job(job)["tasks"] if t["task_key"] == task_key)
        return build_config(config_type, task["python_wheel_task"]["parameters"])


logger = logging.getLogger(__name__)


def notebook_context(target: str | None = None) -> NotebookContext:
    """The context of `target`; by default the deployed target (see the module doc)."""
    bundle = notebook_bundle(find_bundle_root(), target)
    platform = get_platform(bundle.target)
    platform.configure_mlflow()
    return NotebookContext(bundle, platform)


def notebook_bundle(root: Path, target: str | None = None, client: Any = None) -> ResolvedBundle:
    """The resolved bundle at `root`: as deployed when `root` holds deployed files, else for
    `target` (default `$MLOPS_TARGET`, else the default target). `client`: a WorkspaceClient."""
    deployment = read_deployment(root)
    if deployment is None or target not in (None, deployment.target):
        return load_bundle(root, target or os.environ.get("MLOPS_TARGET"))
    return deployed_bundle(root, deployment, client)


def deployed_bundle(root: Path, deployment: Deployment, client: Any = None) -> ResolvedBundle:
    """The bundle resolved for the deployed target with the values its deployed jobs carry."""
    if client is None:
        from databricks.sdk import WorkspaceClient

        client = WorkspaceClient()
    jobs = {
        key: client.jobs.get(job_id=job_id).settings.as_dict() for key, job_id in deployment.job_ids.items()
    }
    config = read_config(root)
    variables = deployed_variables(config, deployment.target, jobs)
    bundle = resolve_bundle(config, deployment.target, variables)
    check_deployed(bundle, jobs)
    logger.info("using target %s as deployed to %s", bundle.target, deployment.file_path)
    return bundle
