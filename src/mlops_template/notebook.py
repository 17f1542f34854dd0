"""What the notebooks share: the platform and the names and task parameters of one target.

Both come from the target's jobs as the platform has them (`Platform.deployed_jobs`): on Databricks
the notebooks run from the bundle's synced files and read the jobs that deployment made (`--var`
values included); locally the jobs databricks.yml resolves to for the target asked for, else
`$MLOPS_TARGET`, else the bundle's default target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

from mlops_template.bundle.deployment import DeployedJobs
from mlops_template.pipeline_names import PipelineNames
from mlops_template.platform import Platform, get_platform
from mlops_template.tasks.common import TaskConfig, build_config

ConfigT = TypeVar("ConfigT", bound=TaskConfig)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotebookContext:
    """A target's jobs and the names they use, and the platform to reach them."""

    jobs: DeployedJobs
    names: PipelineNames
    platform: Platform

    @property
    def target(self) -> str:
        return self.jobs.target

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

    @property
    def looks_up_features(self) -> bool:
        """Whether the pipeline trains models that look their features up when served
        (bundle variable `serving_features`), so a request sends the request inputs only."""
        from mlops_template.tasks.deploy import DeployConfig

        return self.task_config("pipeline", "deploy", DeployConfig).serving_features == "lookup"

    def task_config(self, job: str, task_key: str, config_type: type[ConfigT]) -> ConfigT:
        """The config a job's wheel task gets when the job runs with its default parameters."""
        return build_config(config_type, self.jobs.task_parameters(job, task_key))

    def job_parameter(self, job: str, name: str) -> str:
        """The default value of a job parameter."""
        return self.jobs.parameter(job, name)


def notebook_context(target: str | None = None) -> NotebookContext:
    """The context of `target`; by default the deployed target (see the module doc)."""
    platform = get_platform(target)
    jobs = platform.deployed_jobs(target)
    context = NotebookContext(jobs, PipelineNames.of(jobs), platform)
    platform.configure_mlflow()
    log.info("notebook context: target %s on the %s platform", context.target, platform.name)
    return context
