"""Drift and quality thresholds; a job overrides any of them with a JSON object (`--thresholds`).

Quality thresholds are named `quality_max_<metric>` / `quality_min_<metric>` over the metrics of
the problem's task type (regression: rmse, mae, r2; binary classification: roc_auc, log_loss,
brier, accuracy), e.g. `{"quality_max_rmse": 4.0}`; their defaults are the problem spec's
`quality_thresholds`. They judge served predictions against the ground truth, window by window,
and are apart from the gate's thresholds (the spec's `gate_thresholds`), which judge a challenger
on held-out rows before it is promoted.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from mlops_template.jsonparams import validated_json_object
from mlops_template.problem_spec import ProblemSpec, load_problem

QUALITY_PREFIX = "quality_"


class ThresholdsError(ValueError):
    """The thresholds are not a JSON object of known, valid settings."""


def _spec(info: ValidationInfo) -> ProblemSpec:
    context = info.context or {}
    return context.get("spec") or load_problem()


class MonitoringThresholds(BaseModel):
    """When a time window counts as drifted or degraded, and when that triggers retraining.

    PSI 0.1-0.2 is the usual "moderate", above 0.2 "significant" shift. KS is the largest gap
    between the two empirical CDFs (0..1). Error rate and latency are reported, never a reason to
    retrain: a new model does not fix malformed requests or a slow host.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float = Field(default=0.2, gt=0, description="feature PSI above this is drift")
    ks: float = Field(default=0.2, gt=0, le=1, description="feature KS statistic above this is drift")
    prediction_psi: float = Field(
        default=0.25, gt=0, description="PSI of predictions vs the champion's on the baseline"
    )
    min_rows: int = Field(default=100, ge=1, description="windows with fewer predictions are not judged")
    min_labeled_rows: int = Field(default=30, ge=1, description="fewer labels: quality is not judged")
    evaluation_windows: int = Field(default=3, ge=1, description="judge the latest N windows")
    violation_windows: int = Field(default=1, ge=1, description="retrain when this many of them violate")
    features: list[str] = Field(description="inputs judged for drift (default: the spec's monitored inputs)")
    quality: dict[str, float] = Field(
        description="`max_<metric>` / `min_<metric>` limits on labelled rows (JSON: `quality_max_<metric>`)"
    )

    @model_validator(mode="before")
    @classmethod
    def _spec_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill `features` and `quality` from the problem spec; `quality_*` keys override `quality`."""
        if not isinstance(data, dict):
            return data
        spec = _spec(info)
        values = {key: value for key, value in data.items() if not key.startswith(QUALITY_PREFIX)}
        overrides = {
            key.removeprefix(QUALITY_PREFIX): v for key, v in data.items() if key.startswith(QUALITY_PREFIX)
        }
        values["quality"] = {**spec.quality_thresholds, **(data.get("quality") or {}), **overrides}
        values.setdefault("features", spec.drift_columns)
        problems = [
            f"{QUALITY_PREFIX}{name} is not one of {[QUALITY_PREFIX + n for n in spec.threshold_names]}"
            for name in values["quality"]
            if name not in spec.threshold_names
        ]
        problems += [
            f"{name} names a gate threshold: the monitoring quality threshold is {QUALITY_PREFIX}{name}"
            for name in data
            if name in spec.threshold_names
        ]
        if isinstance(values["features"], list) and (
            unknown := sorted(set(values["features"]) - set(spec.drift_columns))
        ):
            problems.append(f"features {unknown} are not monitored inputs {spec.drift_columns}")
        if problems:
            raise ValueError("; ".join(problems))
        return values

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringThresholds:
        if self.violation_windows > self.evaluation_windows:
            raise ValueError(
                f"violation_windows ({self.violation_windows}) cannot exceed "
                f"evaluation_windows ({self.evaluation_windows})"
            )
        return self

    @classmethod
    def defaults(cls, spec: ProblemSpec | None = None) -> MonitoringThresholds:
        """The thresholds of `spec` (default: the loaded problem) without overrides."""
        return cls.model_validate({}, context={"spec": spec})

    @classmethod
    def from_json(cls, text: str, spec: ProblemSpec | None = None) -> MonitoringThresholds:
        """Defaults overridden by a JSON object such as `{"psi": 0.1}`; "" means defaults."""
        return validated_json_object(cls, text, "monitoring thresholds", ThresholdsError, {"spec": spec})


def _parse_json_string(value: Any) -> Any:
    return MonitoringThresholds.from_json(value) if isinstance(value, str) else value


# A task config field filled from a JSON object string (the `--thresholds` job parameter).
ThresholdsParam = Annotated[MonitoringThresholds, BeforeValidator(_parse_json_string)]
