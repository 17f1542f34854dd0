"""A resolved target's jobs as `databricks bundle deploy` would deploy them, and the names they use."""

from __future__ import annotations

from mlops_laptop.bundle.loader import ResolvedBundle
from mlops_template.bundle.deployment import DeployedJobs
from mlops_template.pipeline_names import PipelineNames


def deployed_jobs(bundle: ResolvedBundle) -> DeployedJobs:
    """The target's jobs, resolved from databricks.yml as the Jobs service would hold them."""
    return DeployedJobs(bundle.target, bundle.resources.get("jobs", {}))


def pipeline_names(bundle: ResolvedBundle) -> PipelineNames:
    """The names the target's jobs use, read as on Databricks (from its deploy task)."""
    return PipelineNames.of(deployed_jobs(bundle))
