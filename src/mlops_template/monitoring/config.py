"""Drift and quality thresholds; a job overrides any of them with a JSON object (`--thresholds`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from mlops_template.features.columns import MODEL_INPUT_COLUMNS
from mlops_template.tasks.common import parse_json_object


class ThresholdsError(ValueError):
    """The thresholds are not a JSON object of known, valid settings."""


class MonitoringThresholds(BaseModel):
    """When a time window counts as drifted or degraded, and when that triggers retraining.

    PSI 0.1-0.2 is the usual "moderate", above 0.2 "significant" shift. KS is the largest gap
    between the two empirical CDFs (0..1). Error rate and latency are reported, never a reason to
    retrain: a new model does not fix malformed requests or a slow host.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float = Field(default=0.2, gt=0, description="feature PSI above this is drift")
    ks: float = Field(default=0.2, gt=0, le=1, description="feature KS statistic above this is drift")
    prediction_psi: float = Field(default=0.25, gt=0, description="PSI of predictions vs baseline fares")
    max_rmse: float = Field(default=5.0, gt=0, description="dollars, on predictions with ground truth")
    min_rows: int = Field(default=100, ge=1, description="windows with fewer predictions are not judged")
    min_labeled_rows: int = Field(default=30, ge=1, description="fewer labels: RMSE is not judged")
    evaluation_windows: int = Field(default=3, ge=1, description="judge the latest N windows")
    violation_windows: int = Field(default=1, ge=1, description="retrain when this many of them violate")
    features: list[str] = Field(default_factory=lambda: list(MODEL_INPUT_COLUMNS))

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringThresholds:
        if self.violation_windows > self.evaluation_windows:
            raise ValueError(
                f"violation_windows ({self.violation_windows}) cannot exceed "
                f"evaluation_windows ({self.evaluation_windows})"
            )
        if unknown := sorted(set(self.features) - set(MODEL_INPUT_COLUMNS)):
            raise ValueError(f"features {unknown} are not model inputs {MODEL_INPUT_COLUMNS}")
        return self

    @classmethod
    def from_json(cls, text: str) -> MonitoringThresholds:
        """Defaults overridden by a JSON object such as `{"psi": 0.1}`; "" means defaults."""
        overrides = parse_json_object(text, "monitoring thresholds", ThresholdsError)
        try:
            return cls.model_validate(overrides)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'thresholds'}: {e['msg']}" for e in error.errors()
            )
            raise ThresholdsError(f"bad monitoring thresholds: {problems}") from None


def _parse_json_string(value: Any) -> Any:
    return MonitoringThresholds.from_json(value) if isinstance(value, str) else value


# A task config field filled from a JSON object string (the `--thresholds` job parameter).
ThresholdsParam = Annotated[MonitoringThresholds, BeforeValidator(_parse_json_string)]
