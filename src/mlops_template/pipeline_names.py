"""The names a target's pipeline uses, as its jobs get them from the bundle."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_template.bundle.loader import ResolvedBundle


@dataclass(frozen=True)
class PipelineNames:
    """Catalog, schema, model, endpoint and experiment of one resolved target."""

    catalog: str
    schema: str  # the schema resource's deployed name: development mode prefixes it per user
    model: str
    endpoint: str
    experiment: str

    @classmethod
    def of(cls, bundle: ResolvedBundle) -> PipelineNames:
        variables = bundle.variables
        return cls(
            catalog=str(variables["catalog"]),
            schema=str(bundle.resources["schemas"]["pipeline_schema"]["name"]),
            model=str(variables["model_name"]),
            endpoint=str(variables["endpoint_name"]),
            experiment=str(variables["experiment_name"]),
        )

    def table(self, name: str) -> str:
        """The three-level name of a table (or model) in the pipeline's schema."""
        return f"{self.catalog}.{self.schema}.{name}"

    @property
    def model_name(self) -> str:
        return self.table(self.model)
