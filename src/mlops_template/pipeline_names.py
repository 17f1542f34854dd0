"""The names a target's pipeline uses: read from its deploy task, the one that gets all of them."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_template.bundle.deployment import DeployedJobs
from mlops_template.monitoring.tables import MonitoringTables

# The wheel task whose parameters name the catalog, schema, model, endpoint, experiment and
# inference tables (resources/pipeline.job.yml).
NAMES_TASK = ("pipeline", "deploy")


@dataclass(frozen=True)
class PipelineNames:
    """Catalog, schema, model, endpoint, experiment and inference-table prefix of one target."""

    catalog: str
    schema: str  # the schema resource's deployed name: development mode prefixes it per user
    model_name: str  # catalog.schema.model
    endpoint: str
    experiment: str
    inference_table_prefix: str

    @classmethod
    def of(cls, jobs: DeployedJobs) -> PipelineNames:
        """The names the target's deploy task gets (a `TaskArgumentError` if they do not parse)."""
        from mlops_template.tasks.common import build_config
        from mlops_template.tasks.deploy import DeployConfig

        deploy = build_config(DeployConfig, jobs.task_parameters(*NAMES_TASK))
        return cls(
            catalog=deploy.catalog,
            schema=deploy.schema_name,
            model_name=deploy.model_name,
            endpoint=deploy.endpoint_name,
            experiment=deploy.experiment_name,
            inference_table_prefix=deploy.table_prefix,
        )

    def table(self, name: str) -> str:
        """The three-level name of a table (or model) in the pipeline's schema."""
        return f"{self.catalog}.{self.schema}.{name}"

    @property
    def monitoring_tables(self) -> MonitoringTables:
        return MonitoringTables(self.catalog, self.schema, self.inference_table_prefix)
