"""What the notebooks share: the platform and the bundle's resolved names for one target.

On Databricks the notebooks run from the bundle's synced files (`notebooks/` beside
databricks.yml), so the same names resolve there as in the deployed jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

from mlops_template.bundle.loader import ResolvedBundle, find_bundle_root, load_bundle
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


def notebook_context(target: str | None = None) -> NotebookContext:
    """The context of `target` (default `$MLOPS_TARGET`, else the bundle's default target)."""
    bundle = load_bundle(find_bundle_root(), target or os.environ.get("MLOPS_TARGET"))
    platform = get_platform(bundle.target)
    platform.configure_mlflow()
    return NotebookContext(bundle, platform)
